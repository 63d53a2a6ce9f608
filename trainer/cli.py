"""``python -m trainer``: prepare, train, evaluate and export. Each subcommand calls one public function."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train, evaluate and export the CAM network (research tool, not a medical device)."""


def main() -> None:
    """Entry point of ``python -m trainer``."""
    cli()

"""``python -m device``: the screening unit's command line. Each subcommand calls one public function."""

from __future__ import annotations

import sys

import click

from device.errors import ScreeningError

NOTICE = "Research tool, not a medical device: results must not be used for diagnosis."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Offline diabetic-retinopathy screening unit (research tool, not a medical device)."""


@cli.command("preprocess")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default="demo_output/preprocess", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the crops with their FOV outline.")
@click.option("--size", default=512, show_default=True, type=click.IntRange(32, 2048), help="Model input size in pixels.")
def preprocess_cmd(images: tuple[str, ...], out_dir: str, size: int) -> None:
    """Crop IMAGES to the field of view and write each crop with its FOV outline (PNG)."""
    from device.preprocess_cli import preprocess_files

    failures = preprocess_files(list(images), out_dir, size)
    sys.exit(1 if failures else 0)


def main() -> None:
    """Entry point: run the CLI, turning a ScreeningError into one line on stderr."""
    try:
        cli(standalone_mode=True)
    except ScreeningError as exc:  # pragma: no cover - click handles most exits
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

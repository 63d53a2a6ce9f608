"""``python -m trainer``: prepare, train, evaluate and export. Each subcommand calls one public function."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train, evaluate and export the CAM network (research tool, not a medical device)."""


@cli.command("prepare")
@click.argument("source", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Cache folder (new, or a cache to complete).")
@click.option("--size", default=512, show_default=True, type=click.IntRange(64, 2048), help="Model input size in pixels.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0, 512), help="Processes; 0 = one per core.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Label CSV (image,level); default: the layout's own.")
@click.option("--images-dir", type=click.Path(file_okay=False), help="Folder of the photographs (relative to SOURCE or absolute).")
@click.option("--referable-level", default=2, show_default=True, type=click.IntRange(1, 4), help="Grade from which an image is referable.")
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True), help="Share of patients for validation.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the patient split and of --limit.")
@click.option("--limit", type=click.IntRange(1), help="Cache at most this many images (whole patients, seeded choice).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare_cmd(source: str, out: str, size: int, workers: int, labels: str | None, images_dir: str | None,
                referable_level: int, val_fraction: float, seed: int, limit: int | None, quiet: bool) -> None:
    """Preprocess the EyePACS folder SOURCE once into a resumable training cache (see docs/datasets.md)."""
    from device.errors import ScreeningError
    from trainer.prepare import PrepareConfig, prepare, print_summary

    config = PrepareConfig(source=source, out=out, size=size, workers=workers, labels=labels, images_dir=images_dir,
                           referable_level=referable_level, val_fraction=val_fraction, seed=seed, limit=limit,
                           progress=not quiet)
    try:
        print_summary(prepare(config))
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from exc


def main() -> None:
    """Entry point of ``python -m trainer``."""
    cli()

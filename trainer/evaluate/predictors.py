"""What the evaluator runs: anything that turns a photograph into (referable probability, heat map on the photo).

The protocol never sees a model: a :class:`Predictor` is a callable ``(image_id, rgb) -> (prob, heat)`` whose heat
map is already on the photograph's pixel grid, in CAM units. Three kinds:

- :class:`ModelPredictor` wraps a model-space function (standardised crop -> (prob, CAM)) with the unit's own
  preprocessing (``device.preprocess.preprocess``) and maps the CAM back with ``device.regions.cam_to_original``;
  :func:`keras_run_predictor` (a training run folder) and :func:`bundle_predictor` (a ``.tflite`` bundle through
  the unit's runtime) build one.
- :class:`OraclePredictor` answers with the ground truth itself (an upper bound and a protocol check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from device.errors import ConfigError, ModelError
from device.model.card import CAM_STRIDE
from device.preprocess import preprocess
from device.regions import cam_to_original

# Used when a model carries no decision threshold of its own (a Keras run folder); recorded in the report.
DEFAULT_DECISION_THRESHOLD = 0.5

ModelFn = Callable[[np.ndarray], tuple[float, np.ndarray]]


class Predictor(Protocol):
    """``predictor(image_id, rgb) -> (prob_referable, heat)``; heat is float32 (H, W) on the photograph."""

    model_id: str
    decision_threshold: float
    threshold_source: str

    def __call__(self, image_id: str, rgb: np.ndarray) -> tuple[float, np.ndarray]: ...


@dataclass
class ModelPredictor:
    """A model-space function run on the unit's preprocessing, its CAM mapped back onto the photograph.

    Attributes:
        model_fn: standardised float32 (S, S, 3) image -> (referable probability, (S/16, S/16) CAM).
        size: model input size S in pixels.
        model_id: name recorded in the report.
        decision_threshold: referable when prob >= this.
        threshold_source: where the threshold came from (``"model card"``, ``"default 0.5"``…).
        method: ``device.preprocess.standardise`` method the model was trained with.
        details: extra facts for the report (run folder, epoch, validation AUC…).
    """

    model_fn: ModelFn
    size: int
    model_id: str
    decision_threshold: float = DEFAULT_DECISION_THRESHOLD
    threshold_source: str = "default 0.5 (the model carries no threshold)"
    method: str = "per_image"
    details: dict = field(default_factory=dict)

    def __call__(self, image_id: str, rgb: np.ndarray) -> tuple[float, np.ndarray]:
        pre = preprocess(rgb, size=self.size, method=self.method, label=image_id)
        prob, cam = self.model_fn(pre.image)
        return float(prob), cam_to_original(cam, pre.geometry)


@dataclass
class OraclePredictor:
    """Answers with the ground truth: heat = union of the lesion masks, prob = 1 for diseased images.

    Attributes:
        truth: ``image_id -> (diseased, union mask (H, W) bool)``.
    """

    truth: Callable[[str], tuple[bool, np.ndarray]]
    model_id: str = "oracle"
    decision_threshold: float = DEFAULT_DECISION_THRESHOLD
    threshold_source: str = "default 0.5 (oracle)"

    def __call__(self, image_id: str, rgb: np.ndarray) -> tuple[float, np.ndarray]:
        diseased, union = self.truth(image_id)
        return (1.0 if diseased else 0.0), union.astype(np.float32)


def run_threshold(run_dir: str | Path) -> tuple[float, str]:
    """The decision threshold export would give a run: Youden's J on the run's own validation predictions.

    Returns:
        ``(threshold, source)``; 0.5 with that reason when ``val_predictions.csv`` is missing or has one class.
    """
    import csv

    from trainer.evaluate.threshold import choose_threshold

    path = Path(run_dir) / "val_predictions.csv"
    if not path.is_file():
        return DEFAULT_DECISION_THRESHOLD, "default 0.5 (the run folder has no val_predictions.csv)"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows])
    probs = np.array([float(r["prob_referable"]) for r in rows])
    choice = choose_threshold(labels, probs, "youden_j")
    if choice["method"] != "youden_j":
        return DEFAULT_DECISION_THRESHOLD, "default 0.5 (the run's validation predictions have one class)"
    return choice["threshold"], (f"Youden J on the run's {len(rows)} EyePACS validation predictions "
                                 f"(val_predictions.csv), as `trainer export` chooses it")


def keras_run_predictor(run_dir: str | Path, which: str = "best", threshold: float | str = "auto",
                        output_stride: int = CAM_STRIDE) -> ModelPredictor:
    """A training run folder's model (``trainer.training.train.load_run_model``) as a predictor.

    Args:
        run_dir: ``runs/<name>`` written by ``python -m trainer train``.
        which: ``"best"`` (best validation AUC) or ``"last"`` weights.
        threshold: ``"auto"`` (:func:`run_threshold`) or a number in (0, 1).
        output_stride: 16 as trained; 8 runs a Lite0 run's weights one stage finer (``bench/lite0_stride.py``).
    """
    from trainer.training.train import load_run_config, load_run_model  # imports Keras: only when a Keras model is used

    cfg = load_run_config(run_dir)
    model = load_run_model(run_dir, which, output_stride)

    def model_fn(image: np.ndarray) -> tuple[float, np.ndarray]:
        out = model(image[None].astype(np.float32), training=False)
        return float(np.asarray(out["probs"])[0, 1]), np.asarray(out["cam"], np.float32)[0]

    if threshold == "auto":
        value, source = run_threshold(run_dir)
    else:
        value, source = float(threshold), "given on the command line"
    name = Path(run_dir).resolve().name
    details = run_details(run_dir, which, cfg)
    if output_stride != CAM_STRIDE:
        name, details = f"{name}-os{output_stride}", details | {"output_stride": output_stride}
    return ModelPredictor(model_fn, cfg.input_size, f"{name}-{which}", value, source, cfg.data.normalisation, details)


def run_details(run_dir: str | Path, which: str, cfg) -> dict:
    """What the report says about a run's weights: input size, width, epochs done, the chosen epoch's val AUC."""
    import csv

    details = {"run_dir": str(run_dir), "weights": which, "input_size": cfg.input_size, "width": cfg.width,
               "normalisation": cfg.data.normalisation}
    history = Path(run_dir) / "history.csv"
    if history.is_file():
        with history.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_auc") not in (None, "", "nan")]
        if rows:
            best = max(rows, key=lambda r: float(r["val_auc"])) if which == "best" else rows[-1]
            details.update(epochs_done=int(rows[-1]["epoch"]), epoch=int(best["epoch"]),
                           val_auc=round(float(best["val_auc"]), 4))
    return details


def bundle_predictor(path: str | Path, num_threads: int | None = None,
                     threshold: float | str = "auto") -> ModelPredictor:
    """A ``models/<id>`` bundle (``model.tflite`` + ``model.json``) through the unit's own runtime.

    Args:
        path: the bundle folder, or its ``model.tflite`` / ``model.json``.
        num_threads: interpreter threads (None: runtime default).
        threshold: ``"auto"`` (the card's ``decision_threshold``) or a number in (0, 1).
    """
    from device.model.bundle import load_bundle

    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    bundle = load_bundle(folder, run_selftest=True, num_threads=num_threads)

    def model_fn(image: np.ndarray) -> tuple[float, np.ndarray]:
        prediction = bundle.predict(image)
        return prediction.prob_referable, np.asarray(prediction.cam, np.float32)

    value, source = ((bundle.card.decision_threshold, "model card") if threshold == "auto"
                     else (float(threshold), "given on the command line"))
    card = bundle.card
    details = {"bundle": str(folder), "format": card.format, "input_size": card.input.size,
               "runtime": bundle.runtime.backend, "source": card.source}
    for key in ("validation_auc_tflite", "training.best_epoch", "training.epochs_done"):
        if key in card.metrics:
            details[key.replace("training.", "")] = card.metrics[key]
    method = card.input.normalisation  # the standardisation the model was trained with
    details["normalisation"] = method
    return ModelPredictor(model_fn, card.input.size, bundle.id, value, source, method,
                          {k: v for k, v in details.items() if v is not None})


def load_predictor(spec: str, which: str = "best", truth: Callable[[str], tuple[bool, np.ndarray]] | None = None,
                   num_threads: int | None = None, threshold: float | str = "auto") -> Predictor:
    """Pick the predictor kind from ``spec``: ``"oracle"``, a run folder, or a bundle folder / ``.tflite`` file.

    Args:
        spec: what to run.
        which: ``best`` or ``last`` weights of a run folder.
        truth: ground truth per image, for the oracle.
        num_threads: interpreter threads of a bundle.
        threshold: decision threshold, ``"auto"`` (card; Youden J on a run's validation predictions; 0.5 for the
            oracle) or a number in (0, 1).

    Raises:
        ModelError: the path is neither a run folder (config.json) nor a bundle (model.json).
        ConfigError: a threshold outside (0, 1).
    """
    if threshold != "auto":
        try:
            value = float(threshold)
        except ValueError:
            value = -1.0
        if not 0.0 < value < 1.0:
            raise ConfigError(f"The decision threshold {threshold!r} is not 'auto' or a number between 0 and 1; "
                              f"pass e.g. --decision-threshold 0.5.")
        threshold = value
    if spec == "oracle":
        if truth is None:
            raise ModelError("The oracle needs the dataset's ground truth; pass --data with a DiaretDB1 folder.")
        oracle = OraclePredictor(truth)
        if threshold != "auto":
            oracle.decision_threshold, oracle.threshold_source = float(threshold), "given on the command line"
        return oracle
    path = Path(spec)
    folder = path.parent if path.is_file() else path
    if (folder / "model.json").is_file():
        return bundle_predictor(folder, num_threads, threshold)
    if (folder / "config.json").is_file():
        return keras_run_predictor(folder, which, threshold)
    raise ModelError(f"{spec} is neither a model bundle (model.json + model.tflite) nor a training run folder "
                     f"(config.json); give models/<id>, runs/<name> or 'oracle'.")

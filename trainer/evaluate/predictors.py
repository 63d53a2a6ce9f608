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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from device.errors import ModelError
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
    """

    model_fn: ModelFn
    size: int
    model_id: str
    decision_threshold: float = DEFAULT_DECISION_THRESHOLD
    threshold_source: str = "default 0.5 (the model carries no threshold)"
    method: str = "per_image"

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


def keras_run_predictor(run_dir: str | Path, which: str = "best") -> ModelPredictor:
    """A training run folder's model (``trainer.train.load_run_model``) as a predictor.

    Args:
        run_dir: ``runs/<name>`` written by ``python -m trainer train``.
        which: ``"best"`` (best validation AUC) or ``"last"`` weights.
    """
    from trainer.train import load_run_config, load_run_model  # imports Keras: only when a Keras model is used

    cfg = load_run_config(run_dir)
    model = load_run_model(run_dir, which)

    def model_fn(image: np.ndarray) -> tuple[float, np.ndarray]:
        out = model(image[None].astype(np.float32), training=False)
        return float(np.asarray(out["probs"])[0, 1]), np.asarray(out["cam"], np.float32)[0]

    name = Path(run_dir).resolve().name
    return ModelPredictor(model_fn, cfg.input_size, f"{name}-{which}", method=cfg.data.normalisation,
                          threshold_source="default 0.5 (a run folder carries no decision threshold)")


def bundle_predictor(path: str | Path, num_threads: int | None = None) -> ModelPredictor:
    """A ``models/<id>`` bundle (``model.tflite`` + ``model.json``) through the unit's own runtime.

    Args:
        path: the bundle folder, or its ``model.tflite`` / ``model.json``.
        num_threads: interpreter threads (None: runtime default).
    """
    from device.model_bundle import load_bundle

    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    bundle = load_bundle(folder, run_selftest=True, num_threads=num_threads)

    def model_fn(image: np.ndarray) -> tuple[float, np.ndarray]:
        prediction = bundle.predict(image)
        return prediction.prob_referable, np.asarray(prediction.cam, np.float32)

    return ModelPredictor(model_fn, bundle.card.input.size, bundle.id, bundle.card.decision_threshold,
                          "model card", "per_image")


def load_predictor(spec: str, which: str = "best", truth: Callable[[str], tuple[bool, np.ndarray]] | None = None,
                   num_threads: int | None = None) -> Predictor:
    """Pick the predictor kind from ``spec``: ``"oracle"``, a run folder, or a bundle folder / ``.tflite`` file.

    Raises:
        ModelError: the path is neither a run folder (config.json) nor a bundle (model.json).
    """
    if spec == "oracle":
        if truth is None:
            raise ModelError("The oracle needs the dataset's ground truth; pass --data with a DiaretDB1 folder.")
        return OraclePredictor(truth)
    path = Path(spec)
    folder = path.parent if path.is_file() else path
    if (folder / "model.json").is_file():
        return bundle_predictor(folder, num_threads)
    if (folder / "config.json").is_file():
        return keras_run_predictor(folder, which)
    raise ModelError(f"{spec} is neither a model bundle (model.json + model.tflite) nor a training run folder "
                     f"(config.json); give models/<id>, runs/<name> or 'oracle'.")

"""Where the unit's model comes from: a checked model bundle (models/<id>/), or a deterministic fake.

The pipeline needs only :class:`ScreeningModel`: a ``card`` with ``id``, ``input.size``, ``decision_threshold``
and ``region_threshold``, and ``predict(image)`` returning an object with ``prob_referable`` and ``cam``. The real
bundle (``device.model_bundle.load_bundle``) checks the file's sha256, the card and the self-test when it loads;
the fake ships here so tests, the soak test and laptop demos run with no model file.

    model = open_model({"type": "bundle"})                 # default bundled model, checked at start-up
    model = open_model({"type": "fake", "size": 64})       # deterministic, no file
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Union

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from device.errors import ModelError

# The fake model's "lesion score": a CAM cell whose mean standardised green deviation exceeds this is lesion-like.
FAKE_CAM_OFFSET = 1.2
FAKE_ID = "fake-deterministic"


class BundleModelConfig(BaseModel):
    """A model bundle: ``model.tflite`` + ``model.json`` (+ self-test set), checked at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["bundle"] = "bundle"
    path: str | None = Field(None, description="bundle folder; None = the bundled default model (models/)")
    run_selftest: bool = Field(True, description="run the bundle's self-test images at start-up")
    num_threads: int | None = Field(None, ge=1, le=64, description="LiteRT CPU threads; None = runtime default")


class FakeModelConfig(BaseModel):
    """A deterministic stand-in model (tests, soak test); never for screening."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fake"] = "fake"
    size: int = Field(64, ge=16, le=1024, multiple_of=16, description="input size, pixels (multiple of 16)")
    probability: float | None = Field(None, ge=0, le=1, description="fixed output; None = from image content")
    decision_threshold: float = Field(0.5, gt=0, lt=1, description="referable when probability >= this")
    region_threshold: float = Field(0.65, gt=0, lt=1, description="on the normalised CAM (paper: 0.65)")


ModelConfig = Annotated[Union[BundleModelConfig, FakeModelConfig], Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(ModelConfig)


class ScreeningModel(Protocol):
    """What the pipeline needs from a model."""

    card: Any

    def predict(self, image: np.ndarray) -> Any:
        """Standardised float32 (S, S, 3) -> object with ``prob_referable`` (float) and ``cam`` (S/16, S/16)."""


@dataclass(frozen=True)
class FakeInput:
    size: int
    normalisation: str = "per_image"


@dataclass(frozen=True)
class FakeCard:
    """The part of a model card the unit reads."""

    id: str
    input: FakeInput
    decision_threshold: float
    region_threshold: float
    region_normalisation: str = "max"


@dataclass(frozen=True)
class FakePrediction:
    prob_referable: float
    cam: np.ndarray
    probs: np.ndarray


class FakeModel:
    """Deterministic model: CAM = mean |standardised green| per 16x16 cell; probability from the CAM's maximum.

    Bright or dark spots (exudate- or haemorrhage-like) raise the CAM where they are, so tests can make a
    referable image by drawing one. ``calls`` counts predictions.
    """

    def __init__(self, size: int = 64, probability: float | None = None, decision_threshold: float = 0.5,
                 region_threshold: float = 0.65, model_id: str = FAKE_ID) -> None:
        self.card = FakeCard(model_id, FakeInput(size), decision_threshold, region_threshold)
        self.probability = probability
        self.calls = 0

    def predict(self, image: np.ndarray) -> FakePrediction:
        """Return probability and CAM for one standardised (S, S, 3) image."""
        s = self.card.input.size
        if image.shape != (s, s, 3):
            raise ModelError(f"The image has shape {image.shape} but the model expects ({s}, {s}, 3); preprocess it "
                             "at the model's input size.")
        self.calls += 1
        cells = s // 16
        cam = cv2.resize(np.abs(image[..., 1]).astype(np.float32), (cells, cells), interpolation=cv2.INTER_AREA)
        if self.probability is not None:
            p = float(self.probability)
        else:
            p = float(1.0 / (1.0 + np.exp(-6.0 * (float(cam.max()) - FAKE_CAM_OFFSET))))
        return FakePrediction(p, cam, np.array([1 - p, p], np.float32))


def open_model(cfg: object) -> ScreeningModel:
    """Load the model a config describes.

    Args:
        cfg: a model config object or mapping (``{"type": "bundle", "path": ...}`` or ``{"type": "fake"}``).

    Returns:
        The model, ready to predict.

    Raises:
        ModelError: the bundle is missing, tampered with, fails its self-test, or no runtime is installed.
    """
    if not isinstance(cfg, (BundleModelConfig, FakeModelConfig)):
        cfg = _ADAPTER.validate_python(cfg)
    if isinstance(cfg, FakeModelConfig):
        return FakeModel(cfg.size, cfg.probability, cfg.decision_threshold, cfg.region_threshold)
    try:
        from device.model_bundle import default_model_dir, load_bundle
    except ImportError as exc:
        raise ModelError("The model loader is not installed with this unit: reinstall the package.") from exc
    path = Path(cfg.path) if cfg.path else default_model_dir()
    return load_bundle(path, run_selftest=cfg.run_selftest, num_threads=cfg.num_threads)

"""A deterministic stand-in model, so tests, the soak test and laptop demos run with no model file.

Never for screening: its "CAM" is the mean absolute standardised green per 16x16 cell, and its probability rises
with that CAM's maximum, so a test makes a referable image by drawing a bright or dark spot.

    model = FakeModel(size=64)                        # or open_model({"type": "fake", "size": 64})
    model.predict(image).prob_referable
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.errors import ModelError
from device.model.base import ModelContract, Prediction
from device.model.card import CAM_STRIDE
from device.regions import REGION_THRESHOLD

# The fake model's "lesion score": a CAM cell whose mean standardised green deviation exceeds this is lesion-like.
FAKE_CAM_OFFSET = 1.2
FAKE_ID = "fake-deterministic"


class FakeModelConfig(BaseModel):
    """A deterministic stand-in model (tests, soak test); never for screening."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fake"] = "fake"
    size: int = Field(64, ge=CAM_STRIDE, le=1024, multiple_of=CAM_STRIDE,
                      description=f"input size, pixels (multiple of {CAM_STRIDE})")
    probability: float | None = Field(None, ge=0, le=1, description="fixed output; None = from image content")
    decision_threshold: float = Field(0.5, gt=0, lt=1, description="referable when probability >= this")
    region_threshold: float = Field(REGION_THRESHOLD, gt=0, lt=1,
                                    description=f"on the normalised CAM (paper: {REGION_THRESHOLD})")


class FakeModel:
    """Deterministic model: CAM = mean |standardised green| per CAM cell; probability from the CAM's maximum.

    Bright or dark spots (exudate- or haemorrhage-like) raise the CAM where they are, so tests can make a
    referable image by drawing one. ``calls`` counts predictions.
    """

    def __init__(self, size: int = 64, probability: float | None = None, decision_threshold: float = 0.5,
                 region_threshold: float = REGION_THRESHOLD, model_id: str = FAKE_ID) -> None:
        self.contract = ModelContract(model_id, size, "per_image", decision_threshold, region_threshold)
        self.probability = probability
        self.calls = 0

    @classmethod
    def from_config(cls, cfg: FakeModelConfig) -> FakeModel:
        """Build from a :class:`FakeModelConfig`."""
        return cls(cfg.size, cfg.probability, cfg.decision_threshold, cfg.region_threshold)

    def predict(self, image: np.ndarray) -> Prediction:
        """Return probability and CAM for one standardised (S, S, 3) image."""
        s = self.contract.input_size
        if image.shape != (s, s, 3):
            raise ModelError(f"The image has shape {image.shape} but the model expects ({s}, {s}, 3); preprocess it "
                             "at the model's input size.")
        self.calls += 1
        cells = s // CAM_STRIDE
        cam = cv2.resize(np.abs(image[..., 1]).astype(np.float32), (cells, cells), interpolation=cv2.INTER_AREA)
        if self.probability is not None:
            p = float(self.probability)
        else:
            p = float(1.0 / (1.0 + np.exp(-6.0 * (float(cam.max()) - FAKE_CAM_OFFSET))))
        return Prediction(prob_referable=p, probs=np.array([1 - p, p], np.float32), cam=cam)

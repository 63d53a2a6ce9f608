"""The model interface the screening pipeline uses: the card facts it reads, its one prediction type, the protocol.

Every model the unit can run (a checked bundle, the deterministic fake) exposes a typed :class:`ModelContract`
and returns a :class:`Prediction`, so the pipeline reads typed fields and never guesses with ``getattr``.

    model.contract.input_size, model.contract.decision_threshold      # from model.json (or the fake's config)
    prediction = model.predict(image)                                  # Prediction(prob_referable, probs, cam)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from device.errors import ModelError
from device.preprocess import NORMALISATIONS, InputNormalisation
from device.quality_score import GradabilityScore
from device.regions import CARD_CAM_NORMALISATIONS, CardCAMNormalisation


@dataclass(frozen=True)
class ModelContract:
    """The facts of a model card that the screening pipeline reads; nothing about the model is hard-coded.

    Attributes:
        id: the model id (results, records and the audit trail name it).
        input_size: side S of the square model input, pixels.
        normalisation: the ``device.preprocess.standardise`` method the model was trained with.
        decision_threshold: referable when the referable probability is >= this (0..1).
        region_threshold: region threshold on the [0, 1]-normalised CAM (``device.regions``).
        region_normalisation: how ``device.regions`` normalises the CAM before that threshold.
        gradability: the bundle's gradability head (metrics + pooled features), or None: the gate's own score.

    Raises:
        ModelError: the card asks for a normalisation this unit does not implement.
    """

    id: str
    input_size: int
    normalisation: InputNormalisation
    decision_threshold: float
    region_threshold: float
    region_normalisation: CardCAMNormalisation = "max"
    gradability: GradabilityScore | None = None

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS or self.region_normalisation not in CARD_CAM_NORMALISATIONS:
            raise ModelError(f"The model card asks for normalisation '{self.normalisation}' / "
                             f"'{self.region_normalisation}', which this unit does not implement: update the unit.")


@dataclass(frozen=True)
class Prediction:
    """One image's model output.

    Attributes:
        prob_referable: softmax probability of the referable class, 0..1.
        probs: float32 (2,) softmax over the card's class names [non-referable, referable].
        cam: float32 (S/16, S/16) class activation map of the card's CAM class, at feature resolution.
        features: float32 pooled feature maps (``device.quality_score.pool_mean_std``) for the bundle's gradability
            head; None when the model has none.
    """

    prob_referable: float
    probs: np.ndarray
    cam: np.ndarray
    features: np.ndarray | None = None


class ScreeningModel(Protocol):
    """What the pipeline needs from a model: its contract and one prediction per standardised image."""

    contract: ModelContract

    def predict(self, image: np.ndarray) -> Prediction:
        """Standardised float32 (S, S, 3) image -> :class:`Prediction`."""
        ...

"""The gate's calibration card: thresholds and a learned gradability score, fitted by bench/calibrate_quality.py.

``device/quality_calibration.json`` ships with the gate (it is about photographs, not about any one DR model). It
holds the threshold of every check, a logistic-regression gradability score on the gate's own metrics, and the
facts behind them: the data they were fitted on, the cross-validation figures and when they were made. It is
plain numbers, so the unit needs neither scikit-learn nor TensorFlow to apply it.

Example::

    cal = load_calibration()
    p, reason = cal.score.evaluate(metrics)      # P(ungradable), and the failed check that drives it
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import first_error_sentence
from device.atomic import read_regular
from device.errors import ConfigError, ModelError

CALIBRATION_FILE = Path(__file__).with_name("quality_calibration.json")
SCHEMA_VERSION = 1
TRANSFORM_EPS = 1e-3  # log(x + eps): the fractions that are often 0 (glare, shadow) stay finite


class ScoreFeature(BaseModel):
    """One input of the score: ``coef * (transform(metrics[name]) - mean) / scale``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="a key of device.quality_metrics.METRICS")
    transform: Literal["identity", "log"] = "identity"
    mean: float
    scale: float = Field(gt=0)
    coef: float
    reason: str = Field(description="the check a high contribution points the nurse to (a key of REASONS)")

    def contribution(self, value: float) -> float:
        """This feature's share of the score's logit for a metric value."""
        x = math.log(max(value, 0.0) + TRANSFORM_EPS) if self.transform == "log" else value
        return self.coef * (x - self.mean) / self.scale


def pool_mean_std(maps: list[np.ndarray]) -> np.ndarray:
    """Per-channel mean and standard deviation of each feature map (H, W, C) (or (1, H, W, C)), concatenated in
    order as [mean_1, std_1, mean_2, std_2, ...]: the input of a bundle's gradability head."""
    parts = []
    for m in maps:
        a = np.asarray(m, np.float32)
        a = a.reshape(-1, a.shape[-1])
        parts += [a.mean(axis=0), a.std(axis=0)]
    return np.concatenate(parts).astype(np.float32)


class EmbeddingTerm(BaseModel):
    """The screening network's own feature maps as more inputs of the score (a model bundle's gradability head).

    The inputs are named outputs of the bundle's model (``trainer/export/features.py``), each a (1, H, W, C) map
    pooled by :func:`pool_mean_std`. Their share of the logit is ``weights . pooled + offset``: the standardisation
    of each pooled value is folded into its weight and the offset, so the card carries one number per value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    inputs: tuple[str, ...] = Field(min_length=1, max_length=16, description="model outputs (feature maps) read")
    pooling: Literal["mean_std"] = "mean_std"
    weights: tuple[float, ...] = Field(min_length=1, max_length=8192)
    offset: float

    def contribution(self, features: np.ndarray) -> float:
        """This term's share of the logit for one photograph's pooled features."""
        x = np.asarray(features, np.float64).reshape(-1)
        if x.shape[0] != len(self.weights):
            raise ModelError(f"The model's pooled features have {x.shape[0]} values but its gradability head "
                             f"expects {len(self.weights)}: the model card does not match the model file.")
        return float(np.dot(np.asarray(self.weights, np.float64), x)) + self.offset


class GradabilityScore(BaseModel):
    """A logistic regression on gate metrics: P(ungradable) = sigmoid(intercept + sum of contributions).

    With an ``embedding`` term (a model bundle's gradability head, device/model/card.py) the pooled feature maps
    of the screening network add to the logit; the reason shown is still that of the metrics which raise the score most,
    so the nurse always reads what to fix.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    features: tuple[ScoreFeature, ...] = Field(min_length=1)
    intercept: float
    threshold: float = Field(gt=0, lt=1, description="ungradable when P(ungradable) is above this")
    embedding: EmbeddingTerm | None = Field(None, description="pooled feature-map weights (model bundles only)")

    def evaluate(self, metrics: dict[str, float], features: np.ndarray | None = None) -> tuple[float, str]:
        """P(ungradable) of one photograph, and the reason key of the features that raise it most.

        Args:
            metrics: the photograph's metrics (device.quality_metrics.measure).
            features: the model's pooled feature maps (:func:`pool_mean_std`); required with an ``embedding``.

        Returns:
            (probability 0..1, reason key).

        Raises:
            ModelError: the score needs pooled features and none (or the wrong number) were given.
        """
        by_reason: dict[str, float] = {}
        logit = self.intercept
        for f in self.features:
            c = f.contribution(float(metrics[f.name]))
            logit += c
            by_reason[f.reason] = by_reason.get(f.reason, 0.0) + c
        if self.embedding is not None:
            if features is None:
                raise ModelError("The gradability head needs the model's pooled features, which the model did not "
                                 "return: re-export the bundle with `python -m trainer export`.")
            logit += self.embedding.contribution(features)
        p = 1.0 / (1.0 + math.exp(-min(max(logit, -60.0), 60.0)))
        return p, max(by_reason, key=by_reason.__getitem__)


class QualityCalibration(BaseModel):
    """The whole card: thresholds (QualityConfig field -> value), the score and how they were obtained."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION
    created: str
    code_version: str = Field(description="git commit the calibration ran on")
    thresholds: dict[str, float]
    score: GradabilityScore
    data: dict[str, int] = Field(description="photographs per source the thresholds and the score were fitted on")
    method: str = Field(description="how the thresholds and the score were chosen")
    cross_validation: dict[str, float] = Field(default_factory=dict, description="held-out-fold figures, fractions")


@functools.cache
def load_calibration(path: Path = CALIBRATION_FILE) -> QualityCalibration:
    """Read and validate the calibration card (cached: the unit reads it once).

    Raises:
        ConfigError: the file is missing or invalid, in one sentence.
    """
    try:
        return QualityCalibration.model_validate_json(read_regular(Path(path), 1 << 20))
    except OSError as exc:
        raise ConfigError(f"The quality-gate calibration {path} cannot be read ({exc.strerror}); "
                          "reinstall the unit software.") from exc
    except ValidationError as exc:
        raise ConfigError(first_error_sentence(exc, f"The quality-gate calibration {path}",
                                               "reinstall the unit software or re-run bench/calibrate_quality.py",
                                               whole="card")) from exc

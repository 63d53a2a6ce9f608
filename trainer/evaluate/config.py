"""The evaluation protocol's parameters: one validated pydantic model whose defaults are the paper's.

Gondal et al., ICIP 2017, §3.2 and §4.3; DESIGN.md §2.3–2.4. Every rule and threshold is a field so that a
variant (another healthy definition, 4-connectivity, the any-pixel rule only…) is one ``--set`` away, and the
report records the exact protocol it used.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.config import OverrideError, apply_overrides, first_error_sentence
from device.errors import ConfigError
from device.regions import REGION_THRESHOLD, Normalisation

# Paper §4.3: ground truth = fused expert map at >= 75 % confidence.
GT_CONFIDENCE = 0.75
# Standard FROC score operating points (false positives per image), as in the ROC/CAMELYON challenges.
FROC_SCORE_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# Paper §4.3: lesion-level sensitivity is reported at 1.5 false positives per image.
REPORT_FP_RATE = 1.5
# The region-threshold sweep that traces the FROC curve (normalised CAM units); contains the paper's 0.65.
FROC_THRESHOLDS: tuple[float, ...] = (0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4,
                                      0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)


class EvaluationConfig(BaseModel):
    """Protocol parameters (defaults: the paper's). Units and meaning in each field's description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: float = Field(GT_CONFIDENCE, ge=0.0, le=1.0,
                              description="ground truth = fused expert map >= this mean confidence (paper: 0.75)")
    healthy_confidence: float = Field(GT_CONFIDENCE, ge=0.0, le=1.0,
                                      description="an image is healthy when it has no lesion of `healthy_types` at "
                                      ">= this confidence (default 0.75: 38 healthy / 51 diseased of 89)")
    healthy_types: tuple[str, ...] = Field(("haemorrhages", "hard_exudates", "soft_exudates", "red_small_dots"),
                                           min_length=1, description="lesion types that make an image diseased")
    region_threshold: float = Field(REGION_THRESHOLD, gt=0.0, lt=1.0,
                                    description=f"threshold on the [0, 1]-normalised CAM (paper §3.2: "
                                                f"{REGION_THRESHOLD})")
    connectivity: Literal[4, 8] = Field(8, description="pixel connectivity of regions and ground-truth lesions")
    normalisation: Normalisation = Field(
        "max", description="CAM normalisation: per-image max (paper), min-max, or `fixed_range`")
    fixed_range: tuple[float, float] = Field((0.0, 1.0), description="(low, high) CAM values for 'fixed'")
    restrict_to_fov: bool = Field(True, description="zero the CAM outside the DiaretDB1 field-of-view mask")
    min_region_area: int = Field(1, ge=1, description="drop regions smaller than this many photo pixels")
    image_overlap: float = Field(0.5, gt=0.0, le=1.0,
                                 description="scenario 1: an image is a hit for type T when some lesion of T is "
                                 "covered by one region to at least this fraction of the lesion's area")
    lesion_coverage: float = Field(0.5, gt=0.0, le=1.0,
                                   description="a lesion G_j is detected when one region covers >= this fraction "
                                   "of G_j's pixels (paper: 50 %)")
    fp_iou: float = Field(0.5, gt=0.0, le=1.0,
                          description="a region is a false positive when its mean IoU with the lesions it touches "
                          "is < this (paper: 0.5); a region touching no lesion has IoU 0")
    fp_scope: Literal["all_types", "per_type"] = Field(
        "all_types", description="judge a region's false-positive status against the lesions of all types "
        "together (class-agnostic CAM; default) or against the FROC's own type only")
    gate_by_classifier: bool = Field(True, description="image-level hits and the image-level specificity count "
                                     "regions only on images the classifier calls referable (as the unit shows "
                                     "them); ungated sensitivities are reported as well")
    froc_sweep: Literal["score", "region_threshold"] = Field(
        "score", description="'score': regions at `region_threshold`, swept by their CAM maximum (raw units); "
        "'region_threshold': re-extract regions at every `froc_thresholds` value (lets huge low-threshold "
        "regions cover many lesions for one FP; see docs/evaluation.md)")
    froc_thresholds: tuple[float, ...] = Field(FROC_THRESHOLDS, min_length=2,
                                               description="region thresholds swept when froc_sweep="
                                               "'region_threshold'")
    froc_rates: tuple[float, ...] = Field(FROC_SCORE_RATES, min_length=1,
                                          description="FP/image rates averaged into the FROC score")
    report_fp_rate: float = Field(REPORT_FP_RATE, gt=0.0, description="FP/image for `froc_sensitivity_at_1.5`")
    n_bootstrap: int = Field(2000, ge=0, le=100_000, description="bootstrap resamples over images (0: no CIs)")
    seed: int = Field(0, ge=0, description="bootstrap random seed")

    @field_validator("froc_thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 < t < 1.0 for t in value):
            raise ValueError("every FROC threshold must lie strictly between 0 and 1")
        return tuple(sorted(set(value), reverse=True))

    @field_validator("healthy_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = ("haemorrhages", "hard_exudates", "soft_exudates", "red_small_dots")
        unknown = [t for t in value if t not in known]
        if unknown:
            raise ValueError(f"unknown lesion types {unknown}; use {list(known)}")
        return value

    def thresholds(self) -> tuple[float, ...]:
        """Region thresholds to extract regions at, descending, always containing ``region_threshold``."""
        if self.froc_sweep == "score":
            return (self.region_threshold,)
        return tuple(sorted(set(self.froc_thresholds) | {self.region_threshold}, reverse=True))


def load_evaluation_config(overrides: list[str] | dict[str, Any] | None = None) -> EvaluationConfig:
    """Build a validated config from ``["key=value", ...]`` overrides (values parsed as TOML, bare words as strings).

    Raises:
        ConfigError: unknown key or invalid value, one sentence naming the field.
    """
    try:
        items = apply_overrides({}, overrides, example="connectivity=4")
    except OverrideError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return EvaluationConfig(**items)
    except ValidationError as exc:
        raise ConfigError(first_error_sentence(exc, "Evaluation settings", "see docs/evaluation.md for the allowed "
                                               "values")) from None

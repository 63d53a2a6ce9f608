"""The typed, frozen outcome of screening one photograph, and the per-patient (both eyes) decision.

A :class:`ScreeningResult` is what the pipeline returns, the result screen shows, the records store and
``python -m device screen --json`` prints. It is immutable; the heat map and the original photograph travel with it
only in memory (they are not serialised).

Example::

    result.verdict            # Verdict.REFERABLE
    result.to_json_dict()     # {"verdict": "referable", "probability": 0.83, "regions": [...], ...}
    patient_verdict({"right": r1, "left": r2})   # Verdict.REFERABLE if either eye is referable or ungradable
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

# What the nurse is told to do next, per verdict (shown on the result screen; screening-programme practice:
# an eye that cannot be graded after the allowed retakes is referred, like a referable one).
NEXT_ACTION = {
    "referable": "Refer the patient to an eye specialist.",
    "non_referable": "No referral needed: rescreen in 12 months.",
    "ungradable": "Retake the photograph.",
    "ungradable_final": "Photograph ungradable after retakes: refer the patient.",
}


class Verdict(str, Enum):
    """The three outcomes of screening one eye (the values are the JSON strings)."""

    REFERABLE = "referable"
    NON_REFERABLE = "non_referable"
    UNGRADABLE = "ungradable"


@dataclass(frozen=True)
class RegionBox:
    """A candidate lesion region as a box on the ORIGINAL photograph (what the screen draws and the records keep).

    Built by ``device.pipeline`` from a ``device.regions.RegionProposal`` in model pixels.

    Attributes:
        x, y: top-left corner (pixels, column and row).
        w, h: width and height (pixels).
        score: the maximum of the normalised CAM inside the region, 0..1 (the paper's S_i).
        area: pixels inside the region's connected component (original pixels; 0 when unknown).
    """

    x: int
    y: int
    w: int
    h: int
    score: float
    area: int = 0

    def to_json_dict(self) -> dict:
        """Return ``{"x", "y", "w", "h", "score"}`` with plain Python numbers."""
        return {"x": int(self.x), "y": int(self.y), "w": int(self.w), "h": int(self.h),
                "score": round(float(self.score), 4)}


@dataclass(frozen=True)
class QualityReport:
    """The quality gate's decision on one photograph.

    Attributes:
        gradable: True when every check passed.
        reasons: one short sentence per failed check, in words a nurse understands (empty when gradable).
        metrics: the measured values (name -> float) the thresholds were applied to, for records and calibration.
    """

    gradable: bool
    reasons: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        """Return ``{"gradable", "reasons", "metrics"}`` with plain Python values."""
        return {"gradable": bool(self.gradable), "reasons": list(self.reasons),
                "metrics": {k: round(float(v), 4) for k, v in self.metrics.items()}}


@dataclass(frozen=True)
class ScreeningResult:
    """The outcome of screening one photograph of one eye.

    Attributes:
        verdict: referable / non-referable / ungradable.
        probability: model probability of referable DR (0..1), or None when the model could not run
            (no field of view found).
        quality: the quality gate's report.
        regions: candidate lesion regions in original pixels, strongest first (empty unless referable).
        model_id: the id of the model card that produced the probability.
        timings_ms: stage name -> milliseconds (``preprocess``, ``gate``, ``inference``, ``regions``, ...).
        heatmap: a ``device.pipeline.HeatOverlay`` (normalised CAM over the model's crop and the crop's place in
            the photograph; ``on_photo(w, h)`` resamples it), or None (memory only, not serialised).
        threshold: the decision threshold applied to ``probability`` (from the model card).
        final: for an ungradable eye, True once no retake is left (the eye is then referred).
    """

    verdict: Verdict
    probability: float | None
    quality: QualityReport
    regions: tuple[RegionBox, ...]
    model_id: str
    timings_ms: Mapping[str, float]
    heatmap: object | None = field(default=None, repr=False, compare=False)
    threshold: float = 0.5
    final: bool = False

    @property
    def refer(self) -> bool:
        """True when this eye leads to a referral (referable, or ungradable after the last retake)."""
        return self.verdict is Verdict.REFERABLE or (self.verdict is Verdict.UNGRADABLE and self.final)

    @property
    def next_action(self) -> str:
        """The sentence telling the operator what to do next."""
        if self.verdict is Verdict.UNGRADABLE:
            return NEXT_ACTION["ungradable_final" if self.final else "ungradable"]
        return NEXT_ACTION[self.verdict.value]

    def with_final(self, final: bool) -> ScreeningResult:
        """Return a copy marked final (no retake left) or not."""
        return ScreeningResult(self.verdict, self.probability, self.quality, self.regions, self.model_id,
                               self.timings_ms, self.heatmap, self.threshold, final)

    def to_json_dict(self) -> dict:
        """The JSON object of ``python -m device screen --json`` (without the ``image`` key)."""
        return {
            "verdict": self.verdict.value,
            "probability": None if self.probability is None else round(float(self.probability), 6),
            "quality": {"gradable": bool(self.quality.gradable), "reasons": list(self.quality.reasons)},
            "regions": [r.to_json_dict() for r in self.regions],
            "model_id": self.model_id,
            "timings_ms": {k: round(float(v), 3) for k, v in self.timings_ms.items()},
        }


def patient_verdict(eyes: Mapping[str, ScreeningResult]) -> Verdict:
    """Combine both eyes of one patient: referable if either eye is referable or ungradable.

    Args:
        eyes: eye name (``"right"``, ``"left"``) -> the last result for that eye.

    Returns:
        ``Verdict.REFERABLE`` if any eye is referable or ungradable, otherwise ``Verdict.NON_REFERABLE``.

    Raises:
        ValueError: ``eyes`` is empty.
    """
    if not eyes:
        raise ValueError("No eye was screened for this patient: screen at least one eye first.")
    if any(r.verdict in (Verdict.REFERABLE, Verdict.UNGRADABLE) for r in eyes.values()):
        return Verdict.REFERABLE
    return Verdict.NON_REFERABLE

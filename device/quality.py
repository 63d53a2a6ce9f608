"""The quality gate: is this photograph good enough to grade? Each failed check gives a reason a nurse understands.

Checks, in the order a nurse should fix them (metrics: device.quality_metrics, measured on the retina resampled
to 256 px so they do not depend on the camera, the resolution or the model):

* resolution: the retina spans fewer pixels than the model reads (relative to the model card's input size),
* field of view found (device.fov), not cut off by the frame, centred,
* exposure: too few light levels (dark) or too many clipped pixels (bright),
* glare: a large flat saturated patch (the optic disc, vessel reflexes and rims are small, thin or skipped),
* contrast: detail relative to the local brightness (a fogged lens or a cataract flattens it),
* focus: fine detail relative to coarse detail of the same photograph,
* then a learned gradability score on all the metrics (device.quality_score), which catches what experts reject
  for several milder reasons at once; its reason is the check whose metrics push the score up most. A model
  bundle may carry its own gradability head (the same score with the screening network's pooled features as
  more inputs, fitted for that network); the pipeline then passes it and the features, and it replaces the
  gate's score.

The thresholds and the score are fitted by ``bench/calibrate_quality.py`` by cross-validation on expert-graded
photographs (EyeQ) and photographs of three other cameras, and ship in device/quality_calibration.json;
docs/unit.md has the held-out figures and the plots.

Example::

    gate = QualityGate()                         # calibrated defaults
    report = gate.assess(rgb, pre)               # pre = device.preprocess.preprocess(rgb, size)
    report.gradable, report.reasons, report.metrics
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.errors import BlankImageError, ImageError, ImageTooSmallError, NotFundusError
from device.preprocess import PreprocessedImage
from device.quality_metrics import GATE_SIZE, lit_contrast, measure
from device.quality_score import GradabilityScore, load_calibration
from device.result import QualityReport

__all__ = ["GATE_SIZE", "REASONS", "QualityConfig", "QualityGate", "measure", "unfound_reason"]

# Fraction of the FOV disc inside the frame. Cameras clip the top and bottom of a 45-degree field by design and
# keep 0.84-0.92 of it (IDRiD, DiaretDB1, Kaggle; EyeQ photographs graded Usable go down to 0.79); below 0.7 a
# whole side of the retina is missing. Not fitted: a retina pushed out of the frame is also off-centre, which
# the fitted centring check catches first.
MIN_COVERAGE = 0.7
# A retina spanning fewer original pixels than this fraction of the model's input size is upsampled by more
# than 1.25x: the model would read detail the photograph does not have (the model card gives the input size).
MIN_RESOLUTION_RATIO = 0.8
# A photograph whose retina cannot be found is "too dark" rather than "no retina" when its brightest pixels
# (99.5th percentile of the brightest channel) stay below this 8-bit level: a weak flash, not a wrong subject.
DIM_FRAME_LEVEL = 64.0

# What the nurse reads, per failed check.
REASONS = {
    "resolution": "too low resolution — retake at the camera's full resolution",
    "no_fov": "no retina found — centre the eye in the frame and retake",
    "blank": "picture is black or blank — check the flash and the lens cap",
    "off_centre": "eye not centred — move the camera until the retina is in the middle",
    "partial": "part of the retina is cut off — centre the eye and retake",
    "dark": "too dark — check the flash",
    "bright": "too bright — lower the flash or illumination",
    "uneven": "part of the retina is in shadow — centre on the pupil and retake",
    "glare": "glare or reflections — tilt the camera slightly and retake",
    "contrast": "washed out, no detail — clean the lens and retake",
    "focus": "out of focus — ask the patient to keep still and refocus",
}

_CAL = load_calibration()
_T = _CAL.thresholds


class QualityConfig(BaseModel):
    """Thresholds of the quality gate (defaults: device/quality_calibration.json, see docs/unit.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_resolution_ratio: float = Field(MIN_RESOLUTION_RATIO, ge=0, le=4,
                                        description="retina diameter, original pixels / model input size")
    min_coverage: float = Field(MIN_COVERAGE, ge=0, le=1, description="fraction of the FOV disc inside the frame")
    max_centre_offset: float = Field(_T["max_centre_offset"], ge=0, le=2,
                                     description="FOV centre offset, in FOV radii")
    min_brightness: float = Field(_T["min_brightness"], ge=0, le=255,
                                  description="95th percentile of the brightest channel in the FOV, 8-bit")
    max_clipped: float = Field(_T["max_clipped"], ge=0, le=1,
                               description="fraction of FOV pixels with a channel >= 250")
    max_glare: float = Field(_T["max_glare"], ge=0, le=1,
                             description="largest flat saturated patch, fraction of the FOV")
    min_local_contrast: float = Field(_T["min_local_contrast"], ge=0, le=10,
                                      description="RMS of band-passed green / its local mean, inside the FOV")
    min_vessels: float = Field(_T["min_vessels"], ge=0, le=1,
                               description="fraction of the retina on a visible vessel (relative darkness > 6 %)")
    min_focus: float = Field(_T["min_focus"], ge=0, le=10,
                             description="fine / coarse detail energy of the green channel")
    max_score: float = Field(_CAL.score.threshold, ge=0, le=1,
                             description="learned P(ungradable) above which the photograph is refused; 1 = off")
    use_model_head: bool = Field(True, description="use the model bundle's gradability head (its card) instead of "
                                                   "the gate's own score when the bundle has one")
    max_retakes: int = Field(2, ge=0, le=10, description="retakes allowed before the eye is 'ungradable -> refer'")


class QualityGate:
    """Applies the thresholds of a :class:`QualityConfig` and the learned score to measured metrics."""

    def __init__(self, cfg: QualityConfig | None = None, score: GradabilityScore | None = None) -> None:
        self.cfg = cfg or QualityConfig()
        self.score = score or _CAL.score

    def failures(self, m: dict[str, float], input_size: int = GATE_SIZE, features: np.ndarray | None = None,
                 score: GradabilityScore | None = None) -> list[str]:
        """The keys of ``REASONS`` whose check fails for metrics ``m``, in the order a nurse should fix them.

        Args:
            m: metrics from :func:`measure` (``score`` is added to it when the learned score runs).
            input_size: the model's input size in pixels (the resolution check is relative to it).
            features: the screening model's pooled features (``Prediction.features``), for ``score``.
            score: a model bundle's gradability head (``ModelContract.gradability``), used with its own threshold
                instead of the gate's score; None: the gate's score and ``max_score``. ``max_score`` 1 turns
                both off.
        """
        c, out = self.cfg, []
        if m["fov_diameter_px"] < c.min_resolution_ratio * input_size:
            out.append("resolution")
        if m["coverage"] < c.min_coverage:
            out.append("partial")
        elif m["centre_offset"] > c.max_centre_offset:
            out.append("off_centre")
        if m["brightness"] < c.min_brightness:
            out.append("dark")
        elif m["clipped"] > c.max_clipped:
            out.append("bright")
        if m["glare"] > c.max_glare:
            out.append("glare")
        # One cause per symptom: a low-resolution photograph looks soft and loses its finest vessels, so only a
        # flat one (local contrast below the threshold, which resampling does not cause) is also "washed out";
        # a flat (fogged) one looks soft too; a blurred one loses its fine vessels, so faint vessels only mean
        # "washed out" when the photograph is sharp; a dark one is noisy, so its focus cannot be judged.
        flat = m["local_contrast"] < c.min_local_contrast
        soft = m["focus"] < c.min_focus
        if "resolution" in out:
            if flat:
                out.append("contrast")
        else:
            if flat or (m["vessels"] < c.min_vessels and not soft):
                out.append("contrast")
            if soft and not flat and "dark" not in out:
                out.append("focus")
        if not out and c.max_score < 1:
            head = score if score is not None else self.score
            p, reason = head.evaluate(m, features)
            m["score"] = p
            if p > (head.threshold if score is not None else c.max_score):
                out.append(reason)
        return out

    def assess(self, rgb: np.ndarray, pre: PreprocessedImage, features: np.ndarray | None = None,
               score: GradabilityScore | None = None) -> QualityReport:
        """Decide whether a preprocessed photograph is gradable.

        Args:
            rgb: the original photograph.
            pre: its preprocessing at the model's input size.
            features, score: a model bundle's gradability head and the model's pooled features of this
                photograph (see :meth:`failures`); None: the gate's own score.

        Returns:
            A :class:`device.result.QualityReport`.
        """
        metrics = measure(rgb, pre)
        keys = self.failures(metrics, input_size=pre.geometry.size, features=features, score=score)
        return QualityReport(gradable=not keys, reasons=tuple(REASONS[k] for k in keys), metrics=metrics)

    @staticmethod
    def report_for_error(err: ImageError, rgb: np.ndarray | None = None,
                         cfg: QualityConfig | None = None) -> QualityReport:
        """The report for a photograph that could not be preprocessed (too small, black, no retina found).

        Args:
            err: the ImageTooSmall / BlankImage / NotFundus error.
            rgb: the photograph, when available: a dim one whose retina was not found is reported "too dark",
                a flat one (a veiled retina whose rim no longer stands out) "washed out".
            cfg: the gate's thresholds (default: the calibrated ones).
        """
        metrics: dict[str, float] = {}
        if isinstance(err, ImageTooSmallError):
            key = "resolution"
        elif isinstance(err, BlankImageError):
            key = "blank"
        elif isinstance(err, NotFundusError):
            if rgb is None:
                key = "no_fov"
            elif _is_dim(rgb):
                key = "dark"
            else:
                metrics["lit_contrast"] = lit_contrast(rgb)
                key = unfound_reason(metrics["lit_contrast"], cfg or QualityConfig())
        else:
            raise TypeError(f"{type(err).__name__} is not a quality failure")
        return QualityReport(gradable=False, reasons=(REASONS[key],), metrics=metrics)


def unfound_reason(lit: float, cfg: QualityConfig) -> str:
    """The reason key for a bright photograph whose retina was not found, from the contrast of its lit part.

    Args:
        lit: ``device.quality_metrics.lit_contrast`` of the photograph.
        cfg: the gate's thresholds: below ``min_local_contrast`` the picture is flat ("washed out").
    """
    return "contrast" if lit < cfg.min_local_contrast else "no_fov"


def _is_dim(rgb: np.ndarray) -> bool:
    """True when even the brightest pixels of the photograph are dim (a weak flash)."""
    step = max(1, int(max(rgb.shape[:2]) // 512))
    small = np.ascontiguousarray(rgb[::step, ::step])
    value = cv2.max(cv2.max(small[..., 0], small[..., 1]), small[..., 2])
    hist = np.cumsum(cv2.calcHist([value], [0], None, [256], [0, 256]).ravel())
    return float(np.searchsorted(hist, 0.995 * hist[-1])) < DIM_FRAME_LEVEL

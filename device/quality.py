"""The quality gate: is this photograph good enough to grade? Each failed check gives a reason a nurse understands.

Checks (all measured inside the field of view of the FOV-centred crop at ``GATE_SIZE`` pixels, so the numbers do
not depend on the camera's resolution or the model's input size):

* field of view found (device.fov), centred in the frame, and not cut off by the frame edges,
* exposure (mean luminance; saturated red channel), contrast (std / mean of luminance),
* focus (variance of the Laplacian of the lightly denoised green channel divided by the green channel's
  variance, so it measures sharpness rather than brightness or contrast),
* glare (fraction of saturated pixels).

The thresholds are calibrated by ``bench/calibrate_quality.py`` on the real Kaggle originals and DiaretDB1 images
and degraded copies of them; the confusion table and the margins are in docs/unit.md.

Example::

    gate = QualityGate()                         # calibrated defaults
    report = gate.assess(rgb, pre)               # pre = device.preprocess.preprocess(rgb, size)
    report.gradable, report.reasons, report.metrics
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.errors import BlankImageError, ImageError, NotFundusError
from device.fov import FieldOfView
from device.preprocess import PreprocessedImage, crop_to_fov
from device.result import QualityReport

# Scale the gate measures at: 512 px across the FOV, the network's own input size (DESIGN.md §2.1).
GATE_SIZE = 512
# Pixels eroded from the FOV edge before measuring focus, so the sharp FOV border does not count as detail.
EDGE_ERODE_PX = 9
# A pixel this bright (8-bit luminance) is saturated glare.
SATURATED_LEVEL = 250

# Calibrated thresholds (bench/calibrate_quality.py on the 10 Kaggle originals + 89 DiaretDB1 images and their
# degraded copies; docs/unit.md lists each metric's range on good and bad images and the margins).
MAX_CENTRE_OFFSET = 0.25  # FOV centre to frame centre, FOV radii (good <= 0.07, off-centre >= 0.42)
MIN_COVERAGE = 0.80  # fraction of the FOV disc inside the frame (good >= 0.88: DiaretDB1 discs are clipped)
MIN_MEAN_LUMA = 28.0  # 8-bit mean luminance in the FOV (good >= 30, dark <= 27)
MAX_MEAN_LUMA = 150.0  # (good <= 131)
MAX_RED_CLIPPED = 0.5  # fraction of FOV pixels with a saturated red channel (good <= 0.21)
MIN_CONTRAST = 0.09  # std / mean of luminance in the FOV (good >= 0.107, washed out <= 0.073)
MIN_FOCUS = 1.13e-3  # var of Laplacian of the denoised green channel / its variance, at 512 px (good >= 1.21e-3)
MAX_GLARE = 0.01  # fraction of FOV pixels with saturated luminance (good <= 0.0006, glare >= 0.06)
# Focus: green is the channel with the highest vessel contrast in fundus photographs; a 1-px Gaussian removes
# sensor/JPEG noise so dark, noisy photographs do not look sharp (calibration: it separates good from blurred).
FOCUS_DENOISE_SIGMA = 1.0

# What the nurse reads, per failed check.
REASONS = {
    "no_fov": "no retina found — centre the eye in the frame and retake",
    "blank": "picture is black or blank — check the flash and the lens cap",
    "off_centre": "eye not centred — move the camera until the retina is in the middle",
    "partial": "part of the retina is cut off — centre the eye and retake",
    "dark": "too dark — check the flash",
    "bright": "too bright — lower the flash or illumination",
    "contrast": "washed out, no detail — clean the lens and retake",
    "focus": "out of focus — ask the patient to keep still and refocus",
    "glare": "glare or reflections — tilt the camera slightly and retake",
}


class QualityConfig(BaseModel):
    """Thresholds of the quality gate (defaults: calibrated on real photographs, see docs/unit.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_centre_offset: float = Field(MAX_CENTRE_OFFSET, ge=0, le=2, description="FOV centre offset, in FOV radii")
    min_coverage: float = Field(MIN_COVERAGE, ge=0, le=1, description="fraction of the FOV disc inside the frame")
    min_mean_luma: float = Field(MIN_MEAN_LUMA, ge=0, le=255, description="8-bit mean luminance in the FOV")
    max_mean_luma: float = Field(MAX_MEAN_LUMA, ge=0, le=255, description="8-bit mean luminance in the FOV")
    max_red_clipped: float = Field(MAX_RED_CLIPPED, ge=0, le=1, description="fraction of FOV pixels, red saturated")
    min_contrast: float = Field(MIN_CONTRAST, ge=0, le=10, description="std / mean of luminance in the FOV")
    min_focus: float = Field(MIN_FOCUS, ge=0, le=10, description="var of Laplacian of green / var of green, 512 px")
    max_glare: float = Field(MAX_GLARE, ge=0, le=1, description="fraction of saturated FOV pixels")
    max_retakes: int = Field(2, ge=0, le=10, description="retakes allowed before the eye is 'ungradable -> refer'")


def measure(rgb: np.ndarray, pre: PreprocessedImage) -> dict[str, float]:
    """Measure the quality metrics of one photograph.

    Args:
        rgb: the original uint8 RGB photograph (H, W, 3).
        pre: its preprocessing (FOV and crop); reused as-is when it is already GATE_SIZE pixels.

    Returns:
        ``centre_offset`` (FOV radii), ``coverage`` (0..1), ``mean_luma`` (8-bit), ``contrast`` (std / mean of
        luminance), ``focus`` (normalised Laplacian variance), ``glare`` and ``red_clipped`` (fractions of FOV pixels
        whose luminance / red channel is saturated, 0..1).
    """
    fov: FieldOfView = pre.fov
    h, w = rgb.shape[:2]
    if pre.rgb.shape[0] == GATE_SIZE:
        crop, mask = pre.rgb, pre.fov_mask
    else:
        crop, mask, _ = crop_to_fov(rgb, fov, GATE_SIZE)
    disc_area = np.pi * (GATE_SIZE / 2) ** 2
    m8 = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    n = cv2.countNonZero(m8)
    if n == 0:
        return {"centre_offset": 9.0, "coverage": 0.0, "mean_luma": 0.0, "contrast": 0.0, "focus": 0.0,
                "glare": 0.0, "red_clipped": 0.0}
    # OpenCV's masked statistics: the same numbers as numpy on the masked pixels, several times faster.
    luma = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    (mean,), (std,) = (v.ravel() for v in cv2.meanStdDev(luma, mask=m8))
    inner = cv2.erode(m8, np.ones((2 * EDGE_ERODE_PX + 1,) * 2, np.uint8))
    if not cv2.countNonZero(inner):
        inner = m8
    green = crop[..., 1]
    lap = cv2.Laplacian(cv2.GaussianBlur(green.astype(np.float32), (0, 0), FOCUS_DENOISE_SIGMA), cv2.CV_32F,
                        ksize=1)
    lap_std = float(cv2.meanStdDev(lap, mask=inner)[1].ravel()[0])
    green_std = float(cv2.meanStdDev(green, mask=m8)[1].ravel()[0])
    saturated = cv2.countNonZero(cv2.bitwise_and(cv2.compare(luma, SATURATED_LEVEL, cv2.CMP_GE), m8))
    red_sat = cv2.countNonZero(cv2.bitwise_and(cv2.compare(crop[..., 0], SATURATED_LEVEL, cv2.CMP_GE), m8))
    return {
        "centre_offset": float(np.hypot(fov.cx - (w - 1) / 2, fov.cy - (h - 1) / 2) / max(fov.radius, 1.0)),
        "coverage": float(min(1.0, n / disc_area)),
        "mean_luma": float(mean),
        "contrast": float(std / max(mean, 1.0)),
        "focus": lap_std ** 2 / max(green_std ** 2, 1.0),
        "glare": saturated / n,
        "red_clipped": red_sat / n,
    }


class QualityGate:
    """Applies the thresholds of a :class:`QualityConfig` to measured metrics."""

    def __init__(self, cfg: QualityConfig | None = None) -> None:
        self.cfg = cfg or QualityConfig()

    def failures(self, m: dict[str, float]) -> list[str]:
        """The keys of ``REASONS`` whose check fails for metrics ``m``, in the order a nurse should fix them."""
        c, out = self.cfg, []
        if m["coverage"] < c.min_coverage:
            out.append("partial")
        elif m["centre_offset"] > c.max_centre_offset:
            out.append("off_centre")
        if m["mean_luma"] < c.min_mean_luma:
            out.append("dark")
        elif m["mean_luma"] > c.max_mean_luma or m["red_clipped"] > c.max_red_clipped:
            out.append("bright")
        if m["glare"] > c.max_glare:
            out.append("glare")
        if m["contrast"] < c.min_contrast and "dark" not in out:
            out.append("contrast")
        if m["focus"] < c.min_focus and not {"dark", "contrast"} & set(out):
            out.append("focus")
        return out

    def assess(self, rgb: np.ndarray, pre: PreprocessedImage) -> QualityReport:
        """Decide whether a preprocessed photograph is gradable.

        Args:
            rgb: the original photograph.
            pre: its preprocessing.

        Returns:
            A :class:`device.result.QualityReport`.
        """
        metrics = measure(rgb, pre)
        keys = self.failures(metrics)
        return QualityReport(gradable=not keys, reasons=tuple(REASONS[k] for k in keys), metrics=metrics)

    @staticmethod
    def report_for_error(err: ImageError) -> QualityReport:
        """The report for a photograph whose field of view could not be found (BlankImage / NotFundus)."""
        if not isinstance(err, (BlankImageError, NotFundusError)):
            raise TypeError(f"{type(err).__name__} is not a quality failure")
        key = "blank" if isinstance(err, BlankImageError) else "no_fov"
        return QualityReport(gradable=False, reasons=(REASONS[key],), metrics={})

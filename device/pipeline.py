"""Screening one photograph, as pure functions between typed values (no state, no I/O).

photograph (RGB uint8) → preprocess (FOV crop at the model's size) → inference → quality gate (with the
model's gradability head, when its bundle has one) → regions →
frozen :class:`device.result.ScreeningResult` with per-stage timings and the model id. Only the kiosk loop holds
state (retakes, patients, records).

    from device.pipeline import screen_frame
    result = screen_frame(rgb, model, QualityGate())
    result.verdict, result.probability, result.regions, result.timings_ms
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from device.errors import BlankImageError, ImageTooSmallError, ModelError, NotFundusError
from device.model.base import ScreeningModel
from device.preprocess import CropGeometry, preprocess
from device.quality import QualityGate
from device.regions import propose_regions
from device.result import RegionBox, ScreeningResult, Verdict

# Regions smaller than this many model pixels are CAM noise, not lesion candidates (a 2x2 patch at 512 px).
MIN_REGION_AREA_PX = 4
# At most this many regions are reported (strongest first), so the screen stays readable.
MAX_REGIONS = 8


@dataclass(frozen=True)
class HeatOverlay:
    """The normalised CAM over the model's crop, and where that crop lies in the photograph."""

    heat: np.ndarray  # float32 (S, S) in 0..1, 0 outside the field of view
    geometry: CropGeometry

    def on_photo(self, width: int, height: int) -> np.ndarray:
        """The heat map resampled onto the photograph shown at ``width`` x ``height`` pixels (0..1 float32)."""
        g = self.geometry
        h0, w0 = g.image_shape
        k = width / w0
        scaled = CropGeometry(x0=g.x0 * k, y0=g.y0 * height / h0, side=g.side * k, size=g.size,
                              image_shape=(height, width))
        return scaled.map_to_original(self.heat, cv2.INTER_LINEAR)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def screen_frame(rgb: np.ndarray, model: ScreeningModel, gate: QualityGate,
                 label: str = "the photograph") -> ScreeningResult:
    """Screen one photograph of one eye.

    Args:
        rgb: uint8 RGB photograph (H, W, 3).
        model: a :class:`device.model.ScreeningModel` (bundle or fake); its ``contract`` gives the input size,
            normalisation and thresholds.
        gate: the quality gate.
        label: names the photograph in error messages.

    Returns:
        The frozen result. A photograph that is too small or has no findable retina is ``ungradable`` with no
        probability; an ungradable photograph whose retina was found still gets the model's probability
        (reported, not used).

    Raises:
        ModelError: the model failed.
    """
    contract = model.contract
    timings: dict[str, float] = {}
    t = time.perf_counter()
    try:
        pre = preprocess(rgb, size=contract.input_size, method=contract.normalisation, label=label)
    except (BlankImageError, NotFundusError, ImageTooSmallError) as err:
        timings["preprocess"] = _ms(t)
        report = QualityGate.report_for_error(err, rgb, gate.cfg)
        timings["total"] = timings["preprocess"]
        return ScreeningResult(Verdict.UNGRADABLE, None, report, (), contract.id, timings,
                               threshold=contract.decision_threshold)
    timings["preprocess"] = _ms(t)

    t = time.perf_counter()
    prediction = model.predict(pre.image)
    prob = float(prediction.prob_referable)
    if not np.isfinite(prob) or not 0.0 <= prob <= 1.0:
        raise ModelError(f"The model returned an invalid probability ({prob}): check the model bundle.")
    timings["inference"] = _ms(t)

    # The gate runs after inference so that a bundle's gradability head can read the network's pooled features.
    t = time.perf_counter()
    head = contract.gradability if gate.cfg.use_model_head else None
    report = gate.assess(rgb, pre, features=prediction.features, score=head)
    timings["gate"] = _ms(t)

    t = time.perf_counter()
    if not report.gradable:
        verdict = Verdict.UNGRADABLE
    else:
        verdict = Verdict.REFERABLE if prob >= contract.decision_threshold else Verdict.NON_REFERABLE
    size = contract.input_size
    proposals = propose_regions(np.asarray(prediction.cam, np.float32), size=(size, size),
                                threshold=contract.region_threshold, normalisation=contract.region_normalisation,
                                mask=pre.fov_mask, min_area=MIN_REGION_AREA_PX)
    regions: tuple[RegionBox, ...] = ()
    if verdict is Verdict.REFERABLE:
        boxes = []
        for r in proposals.regions[:MAX_REGIONS]:
            x, y, w, h = pre.geometry.box_to_original(r.x, r.y, r.w, r.h)
            area = int(round(r.area / pre.geometry.scale ** 2))
            boxes.append(RegionBox(x, y, w, h, float(r.score), area))
        regions = tuple(boxes)
    heat = HeatOverlay(proposals.heat, pre.geometry)
    timings["regions"] = _ms(t)
    timings["total"] = sum(timings.values())
    return ScreeningResult(verdict, prob, report, regions, contract.id, timings, heatmap=heat,
                           threshold=contract.decision_threshold)

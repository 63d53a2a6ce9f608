"""Synthetic screening records (no model, no licensed image) for the console's tests and benchmark.

Each patient visit gets both eyes through the real :class:`device.records.RecordStore` (images, records, audit),
with a mix of verdicts like a field clinic's: mostly no referral, some referable with regions, some ungradable
photographs that are retaken (and some still ungradable after the last retake).

    fill_records("bench_out/records", visits=5000, days=50)     # 10,000+ photographs over 50 days
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np

from device.quality import REASONS
from device.records import RecordStore
from device.regions import REGION_THRESHOLD
from device.result import QualityReport, RegionBox, ScreeningResult, Verdict

OPERATORS = ("nurse-a", "nurse-b", "nurse-c")
MODEL_ID = "synthetic-model"
THRESHOLD = 0.6
TIMINGS = {"preprocess": 11.0, "gate": 1.7, "inference": 160.0, "regions": 1.1, "total": 174.0}
# Typical gate metrics of a gradable photograph (device.quality_metrics.METRICS).
METRICS = {"fov_diameter_px": 1400.0, "centre_offset": 0.02, "coverage": 0.9, "mean_luma": 80.0, "brightness": 190.0,
           "clipped": 0.0, "glare": 0.0, "local_contrast": 0.07, "vessels": 0.2, "vessel_cover": 1.0, "focus": 1.0,
           "sharpness": 2.2, "shadow_blocks": 0.0, "blurred_blocks": 0.0, "flat_blocks": 0.3,
           "illumination_spread": 0.15}
DARK = REASONS["dark"]


def result(verdict: str, probability: float | None, final: bool = False, regions: int = 0,
           model_id: str = MODEL_ID) -> ScreeningResult:
    """A screening result as the pipeline would make it (regions only for referable)."""
    v = Verdict(verdict)
    gradable = v is not Verdict.UNGRADABLE
    quality = QualityReport(gradable, () if gradable else (DARK,), METRICS)
    boxes = tuple(RegionBox(4 + 6 * i, 5 + 4 * i, 8, 7, round(0.9 - 0.1 * i, 2), 40) for i in range(regions))
    return ScreeningResult(v, probability, quality, boxes, model_id, TIMINGS, None, THRESHOLD, final)


def _images(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    photo = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    screen = np.zeros((size * 3 // 5, size, 3), np.uint8)
    screen[: size // 5] = (190, 30, 35)
    return photo, screen


def fill_records(folder: str | Path, visits: int, days: int = 1, first_day: date | None = None, seed: int = 0,
                 size: int = 32) -> dict:
    """Write ``visits`` patient visits (both eyes, retakes) spread over ``days`` days ending ``first_day`` + days.

    Args:
        folder: records folder (created).
        visits: patient visits; each is 2-4 photographs.
        days: calendar days (local time) the visits are spread over, ``visits / days`` per day.
        first_day: the first day (default: so that the last day is today).
        seed: random seed (verdict mix, images).
        size: photograph side in pixels (tiny by default: the console never decodes them).

    Returns:
        ``{"photographs", "visits", "days", "first_day"}``.
    """
    rng = np.random.default_rng(seed)
    first = first_day or date.today() - timedelta(days=days - 1)
    store = RecordStore(folder, fsync=False)
    photo, screen = _images(rng, size)
    photos = 0
    per_day = max(1, -(-visits // days))
    try:
        sid = None
        for n in range(visits):
            day = first + timedelta(days=n // per_day)
            if sid is None or n % per_day == 0:
                sid = store.start_session(OPERATORS[(n // per_day) % len(OPERATORS)], MODEL_ID, "synthetic-unit",
                                          {"sha256": "0" * 64, "decision_threshold": THRESHOLD,
                                           "region_threshold": REGION_THRESHOLD})
            at = datetime.combine(day, time(8, 0)).astimezone() + timedelta(seconds=30 * (n % per_day))
            operator = OPERATORS[n % len(OPERATORS)]
            for e, eye in enumerate(("right", "left")):
                kind = rng.random()
                attempts = []
                if kind < 0.1:  # too dark, then a good retake (or, one in five, ungradable after the retake)
                    last_bad = rng.random() < 0.2
                    attempts = [result("ungradable", None)]
                    attempts.append(result("ungradable", None, final=True) if last_bad else
                                    result("non_referable", float(rng.uniform(0.05, 0.5))))
                elif kind < 0.3:
                    attempts = [result("referable", float(rng.uniform(0.6, 0.99)), regions=int(rng.integers(1, 4)))]
                else:
                    attempts = [result("non_referable", float(rng.uniform(0.01, 0.59)))]
                for a, res in enumerate(attempts, 1):
                    when = (at + timedelta(seconds=10 * e + 3 * a)).astimezone(UTC)
                    store.save(sid, f"P{n + 1:05d}", eye, a, res, photo, screen, operator, "synthetic",
                               captured_at=when.isoformat(timespec="milliseconds"))
                    photos += 1
    finally:
        store.close()
    return {"photographs": photos, "visits": visits, "days": days, "first_day": first}

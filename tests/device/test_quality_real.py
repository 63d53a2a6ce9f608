"""The quality gate on real photographs (../shared/data): originals pass, degraded copies fail."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _calibration():
    pytest.importorskip("tqdm", reason="bench/calibrate_quality.py shows a progress bar with tqdm (train extra)")
    spec = importlib.util.spec_from_file_location("calibrate_quality", REPO / "bench" / "calibrate_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.real_data
@pytest.mark.slow
def test_gate_passes_real_originals_and_fails_their_degraded_copies(kaggle_sample_root, diaretdb1_root):
    cal = _calibration()
    paths = cal.good_images(limit=3)  # 3 Kaggle originals + 3 DiaretDB1 images spread over the set
    assert len(paths) == 6
    rows = cal.calibrate(paths, progress=False)
    table = cal.confusion(rows)
    assert table["original"] == (6, 0), [r for r in rows if r["variant"] == "original"]
    for variant in ("blurred", "dark", "over_exposed", "off_centre", "partial", "non_fundus", "glare"):
        assert table[variant] == (0, 6), (variant, [r for r in rows if r["variant"] == variant])
    reasons = {r["variant"]: r["failed"] for r in rows}
    assert "focus" in reasons["blurred"] and "glare" in reasons["glare"]

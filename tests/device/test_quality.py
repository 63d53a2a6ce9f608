"""Quality gate on synthetic photographs: each degradation fails with the reason a nurse reads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.camera import draw_fundus
from device.preprocess import preprocess
from device.quality import GATE_SIZE, REASONS, QualityConfig, QualityGate, measure


@pytest.fixture(scope="module")
def good() -> np.ndarray:
    return draw_fundus(7, 640, 480)


def _assess(rgb, gate=None):
    return (gate or QualityGate()).assess(rgb, preprocess(rgb, size=256))


def test_good_photograph_passes_with_metrics(good):
    report = _assess(good)
    assert report.gradable and report.reasons == ()
    assert set(report.metrics) == {"centre_offset", "coverage", "mean_luma", "contrast", "focus", "glare",
                                   "red_clipped"}
    assert report.metrics["centre_offset"] < 0.05 and report.metrics["coverage"] > 0.95


def test_metrics_do_not_depend_on_model_size(good):
    a = measure(good, preprocess(good, size=64))
    b = measure(good, preprocess(good, size=GATE_SIZE))
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-6), key


@pytest.mark.parametrize("name, make, reason", [
    ("dark", lambda x: (x * 0.15).astype(np.uint8), "too dark — check the flash"),
    ("blurred", lambda x: cv2.GaussianBlur(x, (0, 0), 6), "out of focus — ask the patient to keep still and refocus"),
    ("over-exposed", lambda x: np.clip(x.astype(np.float32) * 3.0, 0, 255).astype(np.uint8),
     "too bright — lower the flash or illumination"),
])
def test_degraded_photograph_fails_with_its_reason(good, name, make, reason):
    report = _assess(make(good))
    assert not report.gradable
    assert reason in report.reasons, (name, report.reasons, report.metrics)


def test_glare_spot_fails(good):
    bad = good.copy()
    cv2.circle(bad, (300, 200), 45, (255, 255, 255), -1)
    report = _assess(bad)
    assert REASONS["glare"] in report.reasons


def test_washed_out_photograph_fails_on_contrast(good):
    x = good.astype(np.float32)
    inside = good.max(axis=2) > 20
    x[inside] = 0.05 * x[inside] + 0.95 * x[inside].mean(axis=0)
    report = _assess(x.astype(np.uint8))
    assert REASONS["contrast"] in report.reasons


def test_off_centre_photograph_fails(good):
    shifted = cv2.copyMakeBorder(good, 0, 200, 0, 260, cv2.BORDER_CONSTANT, value=0)
    report = _assess(shifted)
    assert report.reasons == (REASONS["off_centre"],)


def test_thresholds_come_from_the_config(good):
    report = _assess(good, QualityGate(QualityConfig(min_mean_luma=250)))
    assert report.reasons == (REASONS["dark"],)


def test_reasons_are_short_plain_sentences():
    for text in REASONS.values():
        assert "—" in text and len(text) < 70 and text == text.lower()


def test_config_rejects_unknown_and_out_of_range_fields():
    with pytest.raises(ValueError):
        QualityConfig(min_focus=-1)
    with pytest.raises(ValueError):
        QualityConfig(sharpness=3)

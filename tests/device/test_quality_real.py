"""The quality gate on real photographs (../shared/data): originals pass, degraded copies fail with their reason,
and the metrics do not move with the model's input size."""

from __future__ import annotations

import pytest

from bench.bench_quality import run
from bench.quality_data import EXPECTED, VARIANTS, photos
from device.imageio import load_image
from device.preprocess import preprocess
from device.quality import measure

CONTINUOUS = ("brightness", "clipped", "local_contrast", "focus", "sharpness", "illumination_spread")


@pytest.mark.real_data
@pytest.mark.slow
def test_gate_passes_real_originals_and_fails_their_degraded_copies(kaggle_sample_root, diaretdb1_root):
    items = photos(("kaggle", "diaretdb1", "idrid"), limit=2)  # 2 photographs of each of three cameras
    assert len(items) >= 4
    rows = run(items, size=256, progress=False)
    originals = [r for r in rows if r["variant"] == "original"]
    assert all(not r["failed"] for r in originals), [(r["name"], r["failed"]) for r in originals if r["failed"]]
    for variant in VARIANTS:
        sel = [r for r in rows if r["variant"] == variant]
        wrong = [(r["name"], r["failed"]) for r in sel if not set(r["failed"].split("+")) & EXPECTED[variant]]
        assert len(sel) == len(originals) and not wrong, (variant, wrong)


@pytest.mark.real_data
@pytest.mark.slow
def test_the_default_bundles_gradability_head_keeps_real_originals_and_degraded_copies_right(kaggle_sample_root,
                                                                                             diaretdb1_root):
    """With the head of the default bundle in place of the gate's score (as device/pipeline.py runs it)."""
    from device.model.bundle import default_model_dir, load_bundle

    model = load_bundle(default_model_dir())
    assert model.contract.gradability is not None  # the shipped default carries one (docs/unit.md)
    items = photos(("kaggle", "diaretdb1", "idrid"), limit=2)
    rows = run(items, size=model.contract.input_size, progress=False, model=model)
    originals = [r for r in rows if r["variant"] == "original"]
    assert all(not r["failed"] for r in originals), [(r["name"], r["failed"]) for r in originals if r["failed"]]
    assert all("score" in r for r in originals)  # the head ran on every original the checks passed
    for variant in VARIANTS:
        sel = [r for r in rows if r["variant"] == variant]
        wrong = [(r["name"], r["failed"]) for r in sel if not set(r["failed"].split("+")) & EXPECTED[variant]]
        assert len(sel) == len(originals) and not wrong, (variant, wrong)


@pytest.mark.real_data
def test_real_metrics_do_not_depend_on_model_size(diaretdb1_root):
    for photo in photos(("diaretdb1", "idrid"), limit=2):
        rgb = load_image(photo.path)
        a, b = measure(rgb, preprocess(rgb, size=256)), measure(rgb, preprocess(rgb, size=512))
        for key in CONTINUOUS:
            assert a[key] == pytest.approx(b[key], rel=0.08, abs=0.005), (photo.name, key)

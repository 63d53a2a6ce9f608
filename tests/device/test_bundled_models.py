"""The bundles committed in models/: each one loads and passes its self-test, and the default screens the samples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device.model.bundle import default_model_dir, load_bundle
from device.preprocess import preprocess_file

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.parent for p in (REPO / "models").glob("*/model.json"))


@pytest.mark.parametrize("folder", BUNDLES, ids=[p.name for p in BUNDLES])
def test_committed_bundle_loads_and_passes_its_selftest(folder):
    bundle = load_bundle(folder, run_selftest=True)
    card = bundle.card
    assert "not a medical device" in card.intended_use.lower()
    assert 0.0 < card.decision_threshold < 1.0
    pre = preprocess_file(REPO / "samples" / "01_p1_right.jpg", size=card.input.size,
                          method=card.input.normalisation)
    pred = bundle.predict(pre.image)
    assert 0.0 <= pred.prob_referable <= 1.0
    assert pred.cam.shape == (card.input.size // 16, card.input.size // 16)


def test_default_is_a_committed_bundle():
    assert default_model_dir() in BUNDLES


@pytest.mark.slow
def test_readme_main_command_screens_the_samples_with_the_bundled_model(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "device", "demo", "--out", str(out)], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Screened 11 photographs of 4 patients" in res.stdout
    model_id = default_model_dir().name
    screens = sorted((out / "screens").glob("*.png"))
    assert len(screens) == 16
    assert (out / "records" / "records.sqlite").exists()
    assert model_id in next(out.glob("session_*.json")).read_text()

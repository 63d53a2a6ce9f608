"""The pure screening pipeline: frame -> preprocess -> gate -> inference -> regions -> frozen result."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from device.camera import draw_fundus
from device.errors import ModelError
from device.model import FakeModel, ModelContract, open_model
from device.pipeline import screen_frame
from device.preprocess import preprocess
from device.quality import REASONS, QualityGate
from device.result import Verdict, patient_verdict


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return draw_fundus(3, 640, 480)


class SpotModel(FakeModel):
    """Referable, with all CAM mass in one cell (row, col): checks the mapping back to the photograph."""

    def __init__(self, size, cell):
        super().__init__(size=size, probability=0.9)
        self.cell = cell

    def predict(self, image):
        p = super().predict(image)
        cam = np.zeros_like(p.cam)
        cam[self.cell] = 5.0
        return dataclasses.replace(p, cam=cam)


def test_referable_regions_are_in_original_pixels_around_the_cam_peak(photo):
    size, (row, col) = 128, (5, 2)
    r = screen_frame(photo, SpotModel(size, (row, col)), QualityGate())
    assert r.verdict is Verdict.REFERABLE and r.probability == pytest.approx(0.9)
    g = preprocess(photo, size).geometry
    # centre of CAM cell (row, col) in model pixels is 16 i + 7.5 -> original pixels through the crop geometry
    cx = g.x0 + (16 * col + 8) / g.scale
    cy = g.y0 + (16 * row + 8) / g.scale
    assert len(r.regions) == 1
    box = r.regions[0]
    assert box.x <= cx <= box.x + box.w and box.y <= cy <= box.y + box.h
    assert 0.5 * 16 / g.scale <= box.w <= 2.5 * 16 / g.scale  # about one cell wide, in original pixels
    assert box.score == pytest.approx(1.0) and box.area > 0
    heat = r.heatmap.on_photo(640, 480)
    assert heat.shape == (480, 640) and heat[int(cy), int(cx)] > 0.9 and heat[5, 5] == 0


def test_threshold_comes_from_the_model_card(photo):
    low = FakeModel(size=64, probability=0.3, decision_threshold=0.25)
    r = screen_frame(photo, low, QualityGate())
    assert r.verdict is Verdict.REFERABLE and r.threshold == 0.25


def test_ungradable_photograph_still_reports_the_probability(photo):
    dark = (photo * 0.15).astype(np.uint8)
    r = screen_frame(dark, FakeModel(size=64, probability=0.9), QualityGate())
    assert r.verdict is Verdict.UNGRADABLE and r.probability == pytest.approx(0.9)
    assert r.regions == () and REASONS["dark"] in r.quality.reasons


def test_no_retina_is_ungradable_without_probability():
    noise = np.random.default_rng(0).integers(60, 200, (480, 640, 3), dtype=np.uint8)
    r = screen_frame(noise, FakeModel(size=64), QualityGate())
    assert r.verdict is Verdict.UNGRADABLE and r.probability is None
    assert r.quality.reasons == (REASONS["no_fov"],)
    black = np.zeros((480, 640, 3), np.uint8)
    assert screen_frame(black, FakeModel(size=64), QualityGate()).quality.reasons == (REASONS["blank"],)


def test_too_small_photograph_is_ungradable_for_resolution():
    r = screen_frame(draw_fundus(1, 200, 150), FakeModel(size=64), QualityGate())
    assert r.verdict is Verdict.UNGRADABLE and r.probability is None
    assert r.quality.reasons == (REASONS["resolution"],)


def test_invalid_model_output_is_a_model_error(photo):
    class Broken(FakeModel):
        def predict(self, image):
            return dataclasses.replace(super().predict(image), prob_referable=float("nan"))

    with pytest.raises(ModelError, match="invalid probability"):
        screen_frame(photo, Broken(size=64), QualityGate())


def test_contract_refuses_a_normalisation_the_unit_lacks():
    with pytest.raises(ModelError, match="normalisation 'zca' / 'max', which this unit does not implement"):
        ModelContract("m", 64, "zca", 0.5, 0.65)
    with pytest.raises(ModelError, match="normalisation 'per_image' / 'fixed', which this unit does not implement"):
        ModelContract("m", 64, "per_image", 0.5, 0.65, "fixed")


def test_result_is_frozen_and_serialises(photo):
    r = screen_frame(photo, FakeModel(size=64), QualityGate())
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.verdict = Verdict.REFERABLE
    d = r.to_json_dict()
    assert set(d) == {"verdict", "probability", "quality", "regions", "model_id", "timings_ms"}
    assert d["quality"] == {"gradable": True, "reasons": []}


def test_patient_is_referred_if_either_eye_refers(photo):
    gate = QualityGate()
    ok = screen_frame(photo, FakeModel(size=64, probability=0.1), gate)
    bad = screen_frame(photo, FakeModel(size=64, probability=0.9), gate)
    ungradable = screen_frame((photo * 0.1).astype(np.uint8), FakeModel(size=64), gate).with_final(True)
    assert patient_verdict({"right": ok, "left": ok}) is Verdict.NON_REFERABLE
    assert patient_verdict({"right": ok, "left": bad}) is Verdict.REFERABLE
    assert patient_verdict({"right": ungradable, "left": ok}) is Verdict.REFERABLE
    assert ungradable.refer and ungradable.next_action.endswith("refer the patient.")
    with pytest.raises(ValueError, match="No eye was screened"):
        patient_verdict({})


def test_open_model_fake_and_missing_bundle(tmp_path):
    assert open_model({"type": "fake", "size": 32}).contract.input_size == 32
    with pytest.raises(ModelError, match="does not exist"):
        open_model({"type": "bundle", "path": str(tmp_path / "nope")})


def test_input_and_cam_normalisation_come_from_the_card(photo):
    class Spy(FakeModel):
        def predict(self, image):
            self.seen = image.copy()
            return super().predict(image)

    model = Spy(size=64, probability=0.9)
    model.contract = dataclasses.replace(model.contract, normalisation="local_contrast")
    screen_frame(photo, model, QualityGate())
    assert np.allclose(model.seen, preprocess(photo, 64, method="local_contrast").image)
    assert not np.allclose(model.seen, preprocess(photo, 64).image)
    with pytest.raises(ModelError, match="normalisation 'zca' / 'max', which this unit does not implement"):
        model.contract = dataclasses.replace(model.contract, normalisation="zca")

"""A bundle's gradability head: the gate's score with the screening network's pooled feature maps as more inputs.

The head lives in the model card (device/model/card.py ``gradability``), reads feature-map outputs of the model
(pooled by device.quality_score.pool_mean_std) and replaces the gate's own score in the pipeline; the nurse still
reads the reason of the metric that raises the score most.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from pydantic import ValidationError

from device.camera import draw_fundus
from device.errors import ModelError
from device.model import FakeModel
from device.model.card import ModelCard
from device.pipeline import screen_frame
from device.quality import REASONS, QualityConfig, QualityGate
from device.quality_score import EmbeddingTerm, GradabilityScore, ScoreFeature, load_calibration, pool_mean_std
from device.result import Verdict
from tests.device.test_model_card import card_dict

MAPS = (("stage_a", (1, 8, 8, 3)), ("stage_b", (1, 4, 4, 2)))  # pooled: 2 * (3 + 2) = 10 values


def head_score(offset: float, weights: tuple[float, ...] = (0.0,) * 10, threshold: float = 0.5) -> GradabilityScore:
    """The shipped gate score's metric terms plus an embedding term that shifts the logit by ``offset``."""
    gate = load_calibration().score
    return GradabilityScore(features=gate.features, intercept=gate.intercept, threshold=threshold,
                            embedding=EmbeddingTerm(inputs=tuple(n for n, _ in MAPS), weights=weights, offset=offset))


def test_pool_mean_std_is_per_channel_mean_then_std_of_each_map_in_order():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1, 8, 8, 3)), rng.normal(size=(4, 4, 2))
    got = pool_mean_std([a, b])
    want = np.concatenate([a.reshape(-1, 3).mean(0), a.reshape(-1, 3).std(0), b.reshape(-1, 2).mean(0),
                           b.reshape(-1, 2).std(0)])
    assert got.dtype == np.float32 and got.shape == (10,)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_embedding_adds_its_dot_product_to_the_logit_and_the_reason_stays_a_metric():
    metrics = {"focus": 2.0, "sharpness": 0.1, "blurred_blocks": 0.0, "local_contrast": 0.08, "vessels": 0.1,
               "vessel_cover": 0.2, "flat_blocks": 0.0, "shadow_blocks": 0.0, "illumination_spread": 0.3,
               "glare": 0.0, "clipped": 0.0, "centre_offset": 0.05}
    feature = ScoreFeature(name="focus", transform="log", mean=0.0, scale=1.0, coef=-1.0, reason="focus")
    weights = tuple(float(i) for i in range(10))
    score = GradabilityScore(features=(feature,), intercept=0.5, threshold=0.5,
                             embedding=EmbeddingTerm(inputs=("a",), weights=weights, offset=-3.0))
    x = np.linspace(-1, 1, 10)
    p, reason = score.evaluate(metrics, x)
    logit = 0.5 - math.log(2.0 + 1e-3) + float(np.dot(weights, x)) - 3.0
    assert p == pytest.approx(1 / (1 + math.exp(-logit)))
    assert reason == "focus"  # the features have no reason of their own: the nurse reads what to fix
    with pytest.raises(ModelError, match="needs the model's pooled features"):
        score.evaluate(metrics)
    with pytest.raises(ModelError, match="have 3 values but its gradability head expects 10"):
        score.evaluate(metrics, np.zeros(3))


def _head_card(**head_changes) -> dict:
    data = card_dict()
    quant = {"scale": 0.02, "zero_point": -5}
    data["outputs"] += [{"name": n, "shape": list(s), "dtype": "int8", "quantisation": quant} for n, s in MAPS]
    score = head_score(0.0).model_dump()
    data["gradability"] = {"score": score, "method": "test", "data": {"eyeq": 638},
                           "cross_validation": {"eyeq_reject_ungradable": 0.9}, "created": "2026-12-04T05:00:00Z",
                           **head_changes}
    return data


def test_card_carries_a_head_only_with_the_feature_outputs_it_reads():
    card = ModelCard.model_validate(_head_card())
    assert card.contract.gradability.embedding.inputs == ("stage_a", "stage_b")
    assert ModelCard.model_validate_json(card.model_dump_json()) == card
    missing = _head_card()
    missing["outputs"] = missing["outputs"][:3]
    with pytest.raises(ValidationError, match=r"reads outputs \['stage_b'\], which the model does not have"):
        ModelCard.model_validate(missing)
    short = _head_card()
    short["gradability"]["score"]["embedding"]["weights"] = [0.0] * 8
    with pytest.raises(ValidationError, match="has 8 weights but its inputs pool to 10 values"):
        ModelCard.model_validate(short)
    no_embedding = _head_card()
    no_embedding["gradability"]["score"]["embedding"] = None
    with pytest.raises(ValidationError, match="must read the network's feature maps"):
        ModelCard.model_validate(no_embedding)
    twice = _head_card()
    twice["outputs"].append(dict(twice["outputs"][3]))
    with pytest.raises(ValidationError, match="once each"):
        ModelCard.model_validate(twice)
    flat = _head_card()
    flat["outputs"][2]["shape"] = [1, 192]
    with pytest.raises(ValidationError, match=r"feature output 'stage_a' must have shape \(1, H, W, C\)"):
        ModelCard.model_validate(flat)
    unsafe = card_dict()
    unsafe["outputs"].append({"name": "../x", "shape": [1, 2, 2, 1], "dtype": "float32"})
    with pytest.raises(ValidationError, match="pattern"):
        ModelCard.model_validate(unsafe)
    without = card_dict()
    assert ModelCard.model_validate(without).contract.gradability is None


class HeadModel(FakeModel):
    """The fake model with a gradability head in its contract and pooled features in its predictions."""

    def __init__(self, score: GradabilityScore):
        super().__init__(size=128, probability=0.2)
        self.contract = dataclasses.replace(self.contract, gradability=score)
        self.seen: list[np.ndarray] = []

    def predict(self, image):
        self.seen.append(image)
        return dataclasses.replace(super().predict(image), features=np.ones(10, np.float32))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return draw_fundus(3, 640, 480)


def test_the_bundle_head_replaces_the_gate_score_in_the_pipeline(photo):
    gate = QualityGate()
    plain = screen_frame(photo, FakeModel(size=128, probability=0.2), gate)
    assert plain.verdict is Verdict.NON_REFERABLE  # the synthetic photograph passes the gate's own score
    refused = screen_frame(photo, HeadModel(head_score(offset=40.0)), gate)
    assert refused.verdict is Verdict.UNGRADABLE and refused.probability == pytest.approx(0.2)
    assert len(refused.quality.reasons) == 1 and refused.quality.reasons[0] in REASONS.values()
    assert refused.quality.metrics["score"] > 0.99
    accepted = screen_frame(photo, HeadModel(head_score(offset=-40.0)), gate)
    assert accepted.verdict is Verdict.NON_REFERABLE and accepted.quality.metrics["score"] < 0.01
    # the head uses its own card threshold; max_score 1 switches every learned score off
    strict = screen_frame(photo, HeadModel(head_score(offset=0.0, threshold=1e-6)), gate)
    assert strict.verdict is Verdict.UNGRADABLE
    off = screen_frame(photo, HeadModel(head_score(offset=40.0)), QualityGate(QualityConfig(max_score=1.0)))
    assert off.verdict is Verdict.NON_REFERABLE and "score" not in off.quality.metrics
    # a clinic can keep the gate's own score instead of the bundle's head ([quality] use_model_head = false)
    own = screen_frame(photo, HeadModel(head_score(offset=40.0)), QualityGate(QualityConfig(use_model_head=False)))
    assert own.verdict is Verdict.NON_REFERABLE and own.quality.metrics["score"] == pytest.approx(
        plain.quality.metrics["score"])


def test_a_head_without_features_from_the_model_is_a_model_error(photo):
    model = HeadModel(head_score(offset=0.0))
    model.predict = lambda image: FakeModel.predict(model, image)  # features None
    with pytest.raises(ModelError, match="needs the model's pooled features"):
        screen_frame(photo, model, QualityGate())

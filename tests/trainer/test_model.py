"""The CAM network: size of the paper's net, output contract, CAM consistent with the logits, serialisation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.model import CAMHead, build_cam_model, feature_model

PAPER_TRAINABLE_PARAMS = 10_246_242  # DESIGN.md §2.1: "10.25 M parameters" (convs + BN scale/shift + dense 1024x2+2)


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_full_size_model_has_paper_parameter_count_and_feature_maps():
    model = build_cam_model(input_size=512, width=1.0)
    assert _trainable(model) == PAPER_TRAINABLE_PARAMS
    assert round(_trainable(model) / 1e6, 2) == 10.25
    assert tuple(feature_model(model).output.shape) == (None, 32, 32, 1024)
    assert tuple(model.output["probs"].shape) == (None, 2)
    assert tuple(model.output["cam"].shape) == (None, 32, 32)
    assert [t.name for t in model.inputs] and len(model.inputs) == 1


def test_256_px_model_has_16x16_cam():
    model = build_cam_model(input_size=256, width=0.125)
    assert tuple(model.output["cam"].shape) == (None, 16, 16)
    assert tuple(feature_model(model).output.shape) == (None, 16, 16, 128)


def test_tiny_forward_pass_probs_and_cam_share_the_dense_kernel():
    model = build_cam_model(input_size=64, width=1 / 16, l2=0.0)
    x = np.random.default_rng(0).standard_normal((3, 64, 64, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    assert set(out) == {"probs", "cam"}
    probs, cam = np.asarray(out["probs"]), np.asarray(out["cam"])
    assert probs.shape == (3, 2) and cam.shape == (3, 4, 4)
    assert probs.dtype == np.float32 and cam.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    kernel, bias = model.get_layer("cam_head").get_weights()
    features = np.asarray(feature_model(model).predict(x, verbose=0))
    # CAM of the referable class = Σ_k w_k A_k, so its spatial mean is that class's logit minus the bias.
    np.testing.assert_allclose(cam, features @ kernel[:, 1], rtol=1e-4, atol=1e-5)
    logit_gap = np.log(probs[:, 1]) - np.log(probs[:, 0])
    expected_gap = cam.mean(axis=(1, 2)) + bias[1] - (features.mean(axis=(1, 2)) @ kernel[:, 0] + bias[0])
    np.testing.assert_allclose(logit_gap, expected_gap, rtol=1e-3, atol=1e-4)


def test_config_round_trip_keeps_every_argument_and_predictions():
    model = build_cam_model(input_size=32, width=1 / 16, name="tiny", l2=1e-3)
    head = model.get_layer("cam_head").get_config()
    assert head["num_classes"] == 2 and head["cam_class"] == 1
    assert head["kernel_regularizer"]["config"]["l2"] == pytest.approx(1e-3)
    clone = keras.Model.from_config(model.get_config())
    assert clone.name == "tiny" and isinstance(clone.get_layer("cam_head"), CAMHead)
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype("float32")
    a, b = model.predict(x, verbose=0), clone.predict(x, verbose=0)
    np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-6)
    np.testing.assert_allclose(a["cam"], b["cam"], atol=1e-6)
    assert len(clone.losses) == len(model.losses) > 0  # the L2 penalties survive serialisation


@pytest.mark.parametrize("size, width, message", [(100, 1.0, "multiple of 16"), (64, 0.0, "width must be positive")])
def test_invalid_arguments_are_rejected(size, width, message):
    with pytest.raises(ValueError, match=message):
        build_cam_model(input_size=size, width=width)


def test_cam_head_rejects_a_cam_class_outside_the_classes():
    with pytest.raises(ValueError, match="cam_class must be in"):
        CAMHead(num_classes=2, cam_class=2)

"""The unit's LiteRT adapter (device/model/runtime.py) on tiny models converted by trainer/export/convert.py."""

from __future__ import annotations

import numpy as np
import pytest

from device.errors import ModelError
from device.model.runtime import LiteRTRuntime

SIZE = 64  # tiny test models: 64 px input -> 4x4 CAM


def tiny_cam_model(size: int = SIZE, seed: int = 0):
    """The real CAM network at width 1/16 with its head set so P(referable) spreads over images.

    With random weights every image gets P ~ 0.5 (the pooled features barely differ), which makes AUC and
    thresholds meaningless. The head is set along the first principal component of the pooled features of 24
    synthetic fundus images, scaled to a logit standard deviation of 2, so the network stays exactly the real one
    while its outputs vary. (An untrained net is the worst case for int8 AUC parity: its scores of referable and
    non-referable images interleave, so every small int8 rounding can swap a pair.)

    Returns:
        ``(keras model, the 24 standardised images float32 (24, S, S, 3))``.
    """
    import keras

    from trainer.model import build_cam_model, feature_model
    from trainer.export.representative import synthetic_images

    keras.utils.set_random_seed(seed)
    model = build_cam_model(size, width=1 / 16, l2=0.0)
    images = synthetic_images(24, size, seed=1).images
    pooled = np.asarray(feature_model(model).predict(images, verbose=0), np.float64).mean(axis=(1, 2))
    direction = np.linalg.svd(pooled - pooled.mean(axis=0), full_matrices=False)[2][0]
    z = pooled @ direction
    scale = 2.0 / max(float(z.std()), 1e-6)
    head = model.get_layer("cam_head")
    half = (direction * scale / 2).astype(np.float32)
    head.kernel.assign(np.stack([-half, half], axis=1))
    centre = float(z.mean() * scale / 2)
    head.bias.assign(np.array([centre, -centre], np.float32))
    return model, images


@pytest.fixture(scope="module")
def converted():
    from trainer.export.convert import convert_to_tflite

    model, images = tiny_cam_model()
    keras_out = model.predict(images, verbose=0)
    return {fmt: convert_to_tflite(model, fmt, images) for fmt in ("float16", "int8")}, images, keras_out


@pytest.mark.slow  # converts two tiny models once per module (~10-30 s on the shared CPU)
def test_outputs_are_found_by_name_and_dequantised(converted):
    flatbuffers, images, keras_out = converted
    # int8 on this tiny net: the rescaled head subtracts two large, nearly equal logits, so an int8 rounding of
    # the pooled features moves P by up to ~0.06 while the ranking stays (r > 0.99); a trained model's figures
    # are in its bundle's parity report.
    for fmt, tol in (("float16", 5e-3), ("int8", 0.1)):
        runtime = LiteRTRuntime(flatbuffers[fmt])
        assert set(runtime.outputs) == {"probs", "cam"}
        assert runtime.output("cam").shape == (1, 4, 4)
        assert runtime.input.dtype == (np.int8 if fmt == "int8" else np.float32)
        assert runtime.input.quantised == (fmt == "int8")
        for i, image in enumerate(images[:4]):
            out = runtime.run(image)
            assert out["probs"].dtype == np.float32 and out["cam"].shape == (4, 4)
            assert np.abs(out["probs"] - keras_out["probs"][i]).max() < tol, fmt
            cam_range = np.ptp(keras_out["cam"][i])
            assert np.abs(out["cam"] - keras_out["cam"][i]).max() < 0.1 * cam_range, fmt


@pytest.mark.slow  # converts two tiny models once per module (~10-30 s on the shared CPU)
def test_int8_input_is_quantised_with_the_tensor_parameters(converted):
    runtime = LiteRTRuntime(converted[0]["int8"])
    spec = runtime.input
    x = np.full((SIZE, SIZE, 3), 1.0, np.float32)
    x[0, 0, 0] = 1e6  # saturates instead of wrapping around
    q = runtime.quantise_input(x)
    assert q.dtype == np.int8 and q.shape == (1, SIZE, SIZE, 3)
    assert q[0, 1, 1, 0] == int(round(1.0 / spec.scale)) + spec.zero_point
    assert q[0, 0, 0, 0] == 127


@pytest.mark.slow  # converts two tiny models once per module (~10-30 s on the shared CPU)
def test_wrong_image_size_is_a_clear_error(converted):
    runtime = LiteRTRuntime(converted[0]["float16"])
    with pytest.raises(ModelError, match=r"shape \(32, 32, 3\) but the model expects \(64, 64, 3\)"):
        runtime.run(np.zeros((32, 32, 3), np.float32))


@pytest.mark.slow  # converts two tiny models once per module (~10-30 s on the shared CPU)
def test_unknown_output_and_signature(converted):
    runtime = LiteRTRuntime(converted[0]["float16"])
    with pytest.raises(ModelError, match="no output named 'logits'"):
        runtime.output("logits")
    with pytest.raises(ModelError, match="no serving signature 'serve'"):
        LiteRTRuntime(converted[0]["float16"], signature="serve")


def test_garbage_file_and_missing_runtime(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00not a flatbuffer" * 10)
    with pytest.raises(ModelError, match=r"cannot load model file .*model\.tflite .*re-export"):
        LiteRTRuntime(bad)
    with pytest.raises(ModelError, match=r"No TFLite runtime could be imported \(no_such_runtime\.interpreter\)"):
        LiteRTRuntime(bad, backend="no_such_runtime.interpreter")

"""The unit's LiteRT adapter (device/model/runtime.py) on the committed bundles' models (no TensorFlow needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from device.errors import ModelError
from device.model.runtime import LiteRTRuntime
from device.preprocess import standardise
from tests.helpers import REPO_ROOT

BUNDLES = {"float16": REPO_ROOT / "models" / "eyepacs256-w0125-lc-float16",
           "int8": REPO_ROOT / "models" / "eyepacs256-w0125-lc-int8"}
SIZE = 256  # their input: 256 px -> 16x16 CAM


@pytest.mark.parametrize("fmt", sorted(BUNDLES))
def test_outputs_are_found_by_name_and_dequantised(fmt):
    runtime = LiteRTRuntime(BUNDLES[fmt] / "model.tflite")
    assert set(runtime.outputs) == {"probs", "cam"}
    assert runtime.output("cam").shape == (1, 16, 16)
    assert runtime.input.dtype == (np.int8 if fmt == "int8" else np.float32)
    assert runtime.input.quantised == (fmt == "int8") and runtime.output("probs").quantised == (fmt == "int8")
    tolerance = json.loads((BUNDLES[fmt] / "model.json").read_text())["selftest"]
    with np.load(BUNDLES[fmt] / "selftest.npz") as data:  # synthetic crops with the outputs recorded at export
        crops, masks, want_probs, want_cams = data["rgb"], data["fov_mask"], data["probs"], data["cam"]
    for crop, mask, probs, cam in zip(crops, masks, want_probs, want_cams):
        out = runtime.run(standardise(crop, mask, "local_contrast"))
        assert out["probs"].dtype == np.float32 and out["cam"].dtype == np.float32 and out["cam"].shape == (16, 16)
        assert abs(float(out["probs"].sum()) - 1.0) < 0.02  # dequantised softmax, not raw int8 codes
        assert np.abs(out["probs"] - probs).max() <= tolerance["prob_atol"]
        assert np.corrcoef(out["cam"].ravel(), cam.ravel())[0, 1] >= tolerance["cam_min_corr"]


def test_int8_input_is_quantised_with_the_tensor_parameters():
    runtime = LiteRTRuntime(BUNDLES["int8"] / "model.tflite")
    spec = runtime.input
    x = np.full((SIZE, SIZE, 3), 1.0, np.float32)
    x[0, 0, 0] = 1e6  # saturates instead of wrapping around
    q = runtime.quantise_input(x)
    assert q.dtype == np.int8 and q.shape == (1, SIZE, SIZE, 3)
    assert q[0, 1, 1, 0] == int(round(1.0 / spec.scale)) + spec.zero_point
    assert q[0, 0, 0, 0] == 127


def test_wrong_image_size_is_a_clear_error():
    runtime = LiteRTRuntime(BUNDLES["float16"] / "model.tflite")
    with pytest.raises(ModelError, match=r"shape \(32, 32, 3\) but the model expects \(256, 256, 3\)"):
        runtime.run(np.zeros((32, 32, 3), np.float32))


def test_unknown_output_and_signature():
    path = BUNDLES["float16"] / "model.tflite"
    runtime = LiteRTRuntime(path.read_bytes())  # from bytes as well as from a file
    with pytest.raises(ModelError, match="no output named 'logits'"):
        runtime.output("logits")
    with pytest.raises(ModelError, match="no serving signature 'serve'"):
        LiteRTRuntime(path, signature="serve")


def test_garbage_file_and_missing_runtime(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00not a flatbuffer" * 10)
    with pytest.raises(ModelError, match=r"cannot load model file .*model\.tflite .*re-export"):
        LiteRTRuntime(bad)
    with pytest.raises(ModelError, match=r"No TFLite runtime could be imported \(no_such_runtime\.interpreter\)"):
        LiteRTRuntime(bad, backend="no_such_runtime.interpreter")

"""Conversion to TFLite (trainer/export/convert.py), read through the unit's LiteRT adapter, compared with Keras."""

from __future__ import annotations

import numpy as np
import pytest

from device.model.runtime import LiteRTRuntime
from tests.helpers import tiny_cam_model


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

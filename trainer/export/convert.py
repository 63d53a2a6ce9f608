"""Keras CAM network -> TFLite flatbuffer (float16 or full-integer int8), builtin ops only.

The model goes through a Keras 3 ``ExportArchive`` SavedModel whose ``serve`` endpoint returns the model's
output dict, then ``tf.lite.TFLiteConverter.from_saved_model``: that route keeps the dict keys as the TFLite
serving-signature output names (``probs``, ``cam``), which the unit looks up by name. (A ``tf.function`` passed
to ``from_concrete_functions`` kept the names too, but left resource variables in the graph, which broke int8
calibration and gave NaNs in float16.)

Usage::

    flatbuffer = convert_to_tflite(model, "int8", representative=images)   # images float32 (N, S, S, 3)
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from device.errors import ScreeningError
from device.model.card import EXPORT_FORMATS

INPUT_NAME = "image"
# "'tf.Erfinv' op is neither a custom op nor a flex op" -- how the MLIR converter names an op with no builtin.
_NON_BUILTIN_OP = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


class ExportError(ScreeningError):
    """The model cannot be exported (unsupported op, parity out of tolerance, bad options or data)."""


def _saved_model(model, size: int, folder: Path) -> Path:
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda image: model(image, training=False),
        input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name=INPUT_NAME)],
    )
    path = folder / "saved_model"
    archive.write_out(str(path), verbose=False)
    return path


def convert_to_tflite(model, fmt: str, representative: np.ndarray | Iterable[np.ndarray] | None = None) -> bytes:
    """Convert a Keras model with one image input and ``{"probs", "cam"}`` outputs to TFLite.

    Args:
        model: ``keras.Model`` (see ``trainer.model.build_cam_model``), input (N, S, S, 3) float32.
        fmt: ``"float16"`` (float16 weights, float32 input/output) or ``"int8"`` (full integer: int8 weights,
            activations, input and outputs; calibrated on ``representative``).
        representative: standardised float32 images (N, S, S, 3) or an iterable of (S, S, 3) images, for int8.

    Returns:
        The ``.tflite`` flatbuffer bytes, with serving signature ``serving_default``: input ``image``, outputs
        ``probs`` and ``cam``.

    Raises:
        ExportError: unknown format, no representative data for int8, or an op with no TFLite builtin kernel.
    """
    import tensorflow as tf

    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"Unknown export format '{fmt}'; use one of {', '.join(EXPORT_FORMATS)}.")
    size = int(model.input_shape[1])
    with tempfile.TemporaryDirectory(prefix="dr-export-") as tmp:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(_saved_model(model, size, Path(tmp))))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if fmt == "float16":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            converter.target_spec.supported_types = [tf.float16]
        else:
            images = [np.asarray(im, np.float32).reshape(1, size, size, 3)
                      for im in (representative if representative is not None else [])]
            if not images:
                raise ExportError("An int8 export needs representative images; pass a training cache or allow "
                                  "synthetic ones.")
            converter.representative_dataset = lambda: ({INPUT_NAME: im} for im in images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError/RuntimeError with MLIR diagnostics
            ops = sorted(set(_NON_BUILTIN_OP.findall(str(exc))))
            if ops:
                raise ExportError(f"The model needs TensorFlow ops with no TFLite builtin kernel ({', '.join(ops)}); "
                                  "replace them with builtin-supported layers, since the unit cannot run Flex "
                                  "ops.") from exc
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ExportError(f"TFLite conversion to {fmt} failed ({first[:200]}); see the log above.") from exc

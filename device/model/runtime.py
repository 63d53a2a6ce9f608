"""The unit's TFLite runtime adapter: LiteRT (``ai-edge-litert``), falling back to ``tflite-runtime``.

This is the only module that imports a TFLite interpreter, and it does so lazily, inside
:func:`load_interpreter_class`, so the rest of the unit (and its tests) import without one. The interpreter and
the signature runner are created once per model. Outputs are found by their serving-signature names (``probs``,
``cam``), never by tensor index, and integer tensors are (de)quantised here from the tensor's own parameters, so
callers always pass and receive float32.

Usage::

    runtime = LiteRTRuntime("models/<id>/model.tflite")
    outputs = runtime.run(image)        # image float32 (S, S, 3) -> {"probs": (2,), "cam": (S/16, S/16)}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.errors import ModelError
from device.model.card import SIGNATURE_KEY

# Interpreter modules in order of preference (DESIGN.md §4): LiteRT, then tflite-runtime 2.14 (numpy < 2 only).
BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
INSTALL_HINT = "install it with `pip install 'dr-cam-screening[unit]'` (ai-edge-litert)"


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape, dtype and affine quantisation (scale 0 = not quantised) of one signature tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantised(self) -> bool:
        """True for an int8/uint8 tensor with affine quantisation."""
        return self.scale > 0 and np.issubdtype(self.dtype, np.integer)


def load_interpreter_class(preferred: str | None = None):
    """Import the first available TFLite interpreter class.

    Args:
        preferred: a module name from ``BACKENDS`` to use exclusively (e.g. for benchmarks), or None for the
            first that imports.

    Returns:
        ``(Interpreter class, module name)``.

    Raises:
        ModelError: no interpreter module can be imported.
    """
    candidates = (preferred,) if preferred else BACKENDS
    for module_name in candidates:
        try:
            module = __import__(module_name, fromlist=["Interpreter"])
        except ImportError:
            continue
        return module.Interpreter, module_name
    raise ModelError(f"No TFLite runtime could be imported ({', '.join(candidates)}); {INSTALL_HINT}.")


def _spec(name: str, detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]), float(scale),
                      int(zero_point))


class LiteRTRuntime:
    """One TFLite model, loaded once, run through its serving signature.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        num_threads: CPU threads for the interpreter (None: the runtime's default).
        signature: serving-signature key (``serving_default`` from ``trainer export``).
        backend: force one module from ``BACKENDS`` (None: LiteRT, else tflite-runtime).

    Raises:
        ModelError: no runtime is installed, the file cannot be loaded, or it has no such signature.
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None,
                 signature: str = SIGNATURE_KEY, backend: str | None = None):
        interpreter_class, self.backend = load_interpreter_class(backend)
        source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {
            "model_path": str(Path(model))}
        label = "the model bytes" if "model_content" in source else f"model file {source['model_path']}"
        try:
            self._interpreter = interpreter_class(num_threads=num_threads, **source)
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"The runtime {self.backend} cannot load {label} ({first}); re-export the model "
                             "with `python -m trainer export`.") from exc
        signatures = self._interpreter.get_signature_list()
        if signature not in signatures:
            raise ModelError(f"The TFLite model has no serving signature '{signature}' (found {sorted(signatures)}); "
                             "re-export it with `python -m trainer export`.")
        self.signature = signature
        self._runner = self._interpreter.get_signature_runner(signature)
        inputs = self._runner.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"The TFLite model must have one input, it has {len(inputs)}; re-export it with "
                             "`python -m trainer export`.")
        (input_name, input_detail), = inputs.items()
        self.input = _spec(input_name, input_detail)
        self.outputs = {name: _spec(name, d) for name, d in self._runner.get_output_details().items()}

    def output(self, name: str) -> TensorSpec:
        """The output tensor called ``name``.

        Raises:
            ModelError: the signature has no output with that name.
        """
        if name not in self.outputs:
            raise ModelError(f"The TFLite model has no output named '{name}' (found {sorted(self.outputs)}); "
                             "re-export it with `python -m trainer export`.")
        return self.outputs[name]

    def quantise_input(self, image: np.ndarray) -> np.ndarray:
        """Cast a float image (S, S, 3) or (1, S, S, 3) to the input tensor's dtype, with batch axis."""
        x = np.asarray(image, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.shape != self.input.shape:
            raise ModelError(f"The image has shape {tuple(x.shape[1:])} but the model expects "
                             f"{self.input.shape[1:]}; preprocess it at the model's input size.")
        if not self.input.quantised:
            return x.astype(self.input.dtype, copy=False)
        info = np.iinfo(self.input.dtype)
        q = np.round(x / self.input.scale) + self.input.zero_point
        return np.clip(q, info.min, info.max).astype(self.input.dtype)

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Run one image through the signature.

        Args:
            image: float32 (S, S, 3) (or (1, S, S, 3)) in the card's normalisation.

        Returns:
            ``{output name: float32 array without the batch axis}``, dequantised when the tensor is integer.
        """
        raw = self._runner(**{self.input.name: self.quantise_input(image)})
        result = {}
        for name, value in raw.items():
            spec = self.outputs[name]
            value = np.asarray(value)
            if spec.quantised:
                value = (value.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
            result[name] = value.astype(np.float32, copy=False)[0]
        return result

"""tests/device: the unit's tests. They need only ``.[unit,dev]`` (no TensorFlow, Keras, JAX, scipy or tqdm);
without the unit's stack (numpy, OpenCV, Pillow, pydantic, click, psutil, cryptography, packaging, a TFLite
runtime) the area is skipped. Fixtures: a test signing key."""

from __future__ import annotations

import importlib.util

import pytest

for _module in ("numpy", "cv2", "PIL", "pydantic", "click", "psutil", "cryptography", "packaging"):
    pytest.importorskip(_module, reason=f"the unit's stack is not installed ({_module}): pip install -e '.[unit,dev]'")
# device.model.runtime.BACKENDS: LiteRT, or tflite-runtime where LiteRT has no wheel
if not any(importlib.util.find_spec(m.split(".")[0]) for m in ("ai_edge_litert", "tflite_runtime")):
    pytest.skip("no TFLite runtime is installed: pip install -e '.[unit,dev]'", allow_module_level=True)


@pytest.fixture(scope="session")
def test_key():
    """An Ed25519 private key made for the test session (never the project's key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()

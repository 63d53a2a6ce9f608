"""Training, evaluation and export of the CAM network (Gondal et al., ICIP 2017).

Research tool, not a medical device.

Importing :mod:`trainer` picks the Keras backend when ``KERAS_BACKEND`` is unset (see :func:`default_backend`), so
``python -m trainer`` runs on a machine with JAX but without TensorFlow (a GPU server) instead of failing inside
``import keras``. It must therefore be imported before ``keras`` (every entry point of the package is).
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

__version__ = "0.1.0"


def module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked or broken installation counts as absent
        return False


def default_backend(environ=os.environ) -> str | None:
    """The Keras backend to set when ``KERAS_BACKEND`` is unset, or None to leave Keras's own choice.

    Keras falls back to ``~/.keras/keras.json`` and then to TensorFlow. When neither ``KERAS_BACKEND`` nor that
    file names a backend other than TensorFlow, and TensorFlow cannot be imported but JAX can, this returns
    ``"jax"``; otherwise None (TensorFlow stays the default where it is installed).
    """
    if environ.get("KERAS_BACKEND"):
        return None
    config = Path(environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        named = json.loads(config.read_text(encoding="utf-8")).get("backend")
    except (OSError, ValueError, AttributeError):
        named = None
    if named and named != "tensorflow":
        return None
    if not module_available("tensorflow") and module_available("jax"):
        return "jax"
    return None


if "keras" not in sys.modules and (_backend := default_backend()) is not None:
    os.environ["KERAS_BACKEND"] = _backend

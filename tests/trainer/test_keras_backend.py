"""With ``KERAS_BACKEND`` unset and TensorFlow not importable, the trainer picks JAX instead of failing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from trainer import default_backend

BLOCK_TENSORFLOW = textwrap.dedent("""
    import sys

    class NoTensorFlow:  # as on a GPU server with JAX only: `import tensorflow` fails
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow.") or name.startswith("tensorboard"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
""")


def _run(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environ.update(KERAS_HOME=str(tmp_path / "keras_home"), CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", **env)
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_without_tensorflow_and_backend_unset_the_trainer_trains_on_jax(tmp_path, synthetic_kaggle):
    code = BLOCK_TENSORFLOW + textwrap.dedent(f"""
        import json
        from trainer.training.config import load_train_config
        from trainer.training.train import train
        import keras

        cfg = load_train_config("tiny", overrides={{"data.path": {str(synthetic_kaggle)!r}, "epochs": 1}})
        summary = train(cfg, {str(tmp_path / "run")!r}, log=lambda line: None)
        print(json.dumps({{"backend": keras.backend.backend(), "summary_backend": summary["backend"],
                          "tensorflow_loaded": "tensorflow" in sys.modules}}))
    """)
    done = _run(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"backend": "jax", "summary_backend": "jax", "tensorflow_loaded": False}
    assert (tmp_path / "run" / "checkpoint.npz").is_file()


def test_without_the_blocker_an_explicit_backend_or_an_installed_tensorflow_is_kept(tmp_path):
    assert default_backend({"KERAS_BACKEND": "tensorflow"}) is None  # set by the user: never changed
    assert default_backend({"KERAS_HOME": str(tmp_path)}) is None  # TensorFlow installed here: Keras's default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert default_backend({"KERAS_HOME": str(tmp_path)}) is None  # the user's keras.json names another backend
    done = _run(BLOCK_TENSORFLOW + "import os, trainer; print(os.environ['KERAS_BACKEND'])", tmp_path,
                KERAS_BACKEND="tensorflow")
    assert done.stdout.strip() == "tensorflow"  # even without TensorFlow: the user's choice, and Keras's error

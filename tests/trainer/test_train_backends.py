"""TensorFlow and JAX: tiny training on each, weights from one load into the other with the same predictions,
and data-parallel training over two virtual CPU devices (JAX: keras.distribution; TF: tf.distribute)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from trainer.training.train import load_run_model

pytest.importorskip("jax")  # the trainer area needs TensorFlow; this module needs the jax extra as well

JAX_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from trainer.training.train import load_run_model, train
    from trainer.training.config import load_train_config

    data, tf_run, jax_run, x_path, out = sys.argv[1:]
    cfg = load_train_config("tiny", overrides={"data.path": data, "epochs": 1, "distribution": "data_parallel",
                                               "num_devices": 2, "augment.placement": "device"})
    train(cfg, jax_run)
    x = np.load(x_path)
    result = {}
    for tag, run in (("tf", tf_run), ("jax", jax_run)):
        pred = load_run_model(run).predict(x, verbose=0)
        result[tag + "_probs"], result[tag + "_cam"] = np.asarray(pred["probs"]), np.asarray(pred["cam"])
    np.savez(out, **result)
""")

TF_DATA_PARALLEL_RUN = textwrap.dedent("""
    import sys
    from trainer.training.train import train
    from trainer.training.config import load_train_config

    cfg = load_train_config("tiny", overrides={"data.path": sys.argv[1], "epochs": 1, "distribution": "data_parallel",
                                               "num_devices": 2})
    train(cfg, sys.argv[2])
""")


def _env(backend: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    return env


@pytest.mark.slow
def test_jax_training_on_two_devices_and_weights_are_interchangeable_with_tensorflow(tf_run, synthetic_kaggle,
                                                                                    tmp_path):
    tf_dir = tf_run[0]
    jax_dir, x_path, out = tmp_path / "tiny_jax", tmp_path / "x.npy", tmp_path / "pred.npz"
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype("float32")
    np.save(x_path, x)
    proc = subprocess.run([sys.executable, "-c", JAX_RUN, str(synthetic_kaggle), str(tf_dir), str(jax_dir),
                           str(x_path), str(out)], env=_env("jax"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = json.loads((jax_dir / "version.json").read_text())
    assert version["backend"] == "jax" and version["data_parallel"] is True
    assert version["devices"] == ["cpu:0", "cpu:1"]
    assert "augmentation: device" in proc.stdout  # FundusAugment traced and sharded under JAX
    summary = json.loads((jax_dir / "summary.json").read_text())
    assert summary["epochs_done"] == 1 and math.isfinite(json.loads((jax_dir / "history.json").read_text())[0]["loss"])
    jax_pred = np.load(out)
    for tag, run in (("tf", tf_dir), ("jax", jax_dir)):
        here = load_run_model(run).predict(x, verbose=0)  # TensorFlow, this process
        np.testing.assert_allclose(here["probs"], jax_pred[f"{tag}_probs"], atol=2e-5)
        scale = max(1.0, float(np.abs(here["cam"]).max()))
        np.testing.assert_allclose(here["cam"], jax_pred[f"{tag}_cam"], atol=1e-4 * scale)
    # The two runs learnt different weights, so the comparison above is not trivially equal.
    assert not np.allclose(jax_pred["tf_cam"], jax_pred["jax_cam"])


@pytest.mark.slow
def test_tensorflow_mirrored_strategy_on_two_virtual_cpus(synthetic_kaggle, tmp_path):
    run_dir = tmp_path / "tiny_tf_dp"
    proc = subprocess.run([sys.executable, "-c", TF_DATA_PARALLEL_RUN, str(synthetic_kaggle), str(run_dir)],
                          env=_env("tensorflow"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = json.loads((run_dir / "version.json").read_text())
    assert version["backend"] == "tensorflow" and version["data_parallel"] is True
    assert version["devices"] == ["/cpu:0", "/cpu:1"]
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1] and math.isfinite(history[0]["loss"])
    model = load_run_model(run_dir)  # the mirrored weights load into a plain model
    assert np.all(np.isfinite(model.get_layer("cam_head").get_weights()[0]))

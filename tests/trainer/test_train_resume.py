"""``--resume`` after a SIGKILL in the middle of an epoch: right epoch, optimiser state and LR schedule intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from trainer.training.checkpoint import TrainingCheckpoint

EPOCHS, KILL_EPOCH, KILL_BATCH = 4, 2, 1  # killed after batch 1 of the third epoch (0-based epoch 2)
STEPS = 3  # tiny preset: 12 training images, batch 4

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import keras
    from trainer.training.train import train
    from trainer.training.config import load_train_config

    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == {kill_epoch} and batch == {kill_batch}:
                os.kill(os.getpid(), signal.SIGKILL)

    # Augmentation on the device: its random state is a model variable that the checkpoint must carry.
    cfg = load_train_config("tiny", overrides={{"data.path": sys.argv[1], "epochs": {epochs},
                                               "augment.placement": "device"}})
    train(cfg, sys.argv[2], callbacks=[KillMidEpoch()])
""").format(kill_epoch=KILL_EPOCH, kill_batch=KILL_BATCH, epochs=EPOCHS)


def _env() -> dict:
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _iterations(run_dir) -> int:
    with np.load(run_dir / "checkpoint.npz") as data:
        paths = json.loads(data["meta"].tobytes().decode())["paths"]
        index = next(i for i, p in enumerate(paths) if p.endswith("/iteration"))
        return int(data[f"v{index:05d}"])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_finishes_with_the_schedule_continuing(synthetic_kaggle, tmp_path):
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(synthetic_kaggle), str(run_dir)],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = TrainingCheckpoint(run_dir).read_state()
    assert state["epochs_done"] == KILL_EPOCH  # the interrupted epoch left no trace in the checkpoint
    assert _iterations(run_dir) == KILL_EPOCH * STEPS
    with np.load(run_dir / "checkpoint.npz") as data:
        assert any("augment_seed" in p for p in json.loads(data["meta"].tobytes().decode())["paths"])
    before = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in before] == [1, 2]

    resumed = subprocess.run([sys.executable, "-m", "trainer", "train", "--resume", str(run_dir)], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} after epoch {KILL_EPOCH} (optimizer step {KILL_EPOCH * STEPS})" in resumed.stdout
    assert "epoch 3/4" in resumed.stdout and "epoch 1/4" not in resumed.stdout
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[:2] == before  # finished epochs are kept, not redone
    # lr during epoch e is 0.01 * 0.99**e: the schedule continues where it stopped, not from the start.
    assert [h["lr"] for h in history] == pytest.approx([0.01 * 0.99**e for e in range(EPOCHS)])
    assert _iterations(run_dir) == EPOCHS * STEPS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_done"] == EPOCHS and summary["best_val_auc"] == max(h["val_auc"] for h in history)

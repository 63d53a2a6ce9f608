"""``--resume`` after a SIGKILL in the middle of an epoch: right epoch, optimiser state and LR schedule intact, with
a checkpoint after every epoch and with one every second epoch (the epochs after the last checkpoint are redone)."""

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

EPOCHS = 4
STEPS = 3  # tiny preset: 12 training images, batch 4

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys, time
    import keras
    from trainer.training.checkpoint import TrainingCheckpoint
    from trainer.training.train import train
    from trainer.training.config import load_train_config

    kill_epoch, kill_batch, every, on_disk = {kill_epoch}, {kill_batch}, {every}, {on_disk}

    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == kill_epoch and batch == kill_batch:
                # The checkpoint is written in the background while the next epoch trains: wait until it has
                # landed, so the test knows which epoch the run must resume after.
                ckpt, deadline = TrainingCheckpoint(sys.argv[2]), time.monotonic() + 60
                while time.monotonic() < deadline and not (
                        ckpt.exists() and ckpt.read_state()["epochs_done"] == on_disk):
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)

    # Augmentation on the device: its random state is a model variable that the checkpoint must carry.
    cfg = load_train_config("tiny", overrides={{"data.path": sys.argv[1], "epochs": {epochs},
                                               "augment.placement": "device", "validate_every": every,
                                               "checkpoint_every": every}})
    train(cfg, sys.argv[2], callbacks=[KillMidEpoch()])
""")


def _env() -> dict:
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _iterations(run_dir) -> int:
    with np.load(run_dir / "checkpoint.npz") as data:
        paths = json.loads(data["meta"].tobytes().decode())["paths"]
        index = next(i for i, p in enumerate(paths) if p.endswith("/iteration"))
        return int(data[f"v{index:05d}"])


@pytest.mark.slow
@pytest.mark.parametrize("every, kill_epoch, on_disk", [
    (1, 2, 2),  # killed after batch 1 of the third epoch; epochs 1 and 2 were checkpointed
    (2, 3, 2),  # validate and checkpoint every 2nd epoch: killed in the fourth, epoch 3 was never checkpointed
])
def test_sigkill_mid_epoch_then_resume_finishes_with_the_schedule_continuing(synthetic_kaggle, tmp_path, every,
                                                                            kill_epoch, on_disk):
    run_dir = tmp_path / "run"
    code = KILLED_RUN.format(kill_epoch=kill_epoch, kill_batch=1, every=every, on_disk=on_disk, epochs=EPOCHS)
    killed = subprocess.run([sys.executable, "-c", code, str(synthetic_kaggle), str(run_dir)],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = TrainingCheckpoint(run_dir).read_state()
    assert state["epochs_done"] == on_disk  # the interrupted epoch (and any after the checkpoint) left no trace
    assert _iterations(run_dir) == on_disk * STEPS
    with np.load(run_dir / "checkpoint.npz") as data:
        assert any("augment_seed" in p for p in json.loads(data["meta"].tobytes().decode())["paths"])
    before = state["history"]
    assert [h["epoch"] for h in before] == list(range(1, on_disk + 1))
    assert (run_dir / "last.weights.h5").is_file() and (run_dir / "best.weights.h5").is_file()

    resumed = subprocess.run([sys.executable, "-m", "trainer", "train", "--resume", str(run_dir)], env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} after epoch {on_disk} (optimizer step {on_disk * STEPS})" in resumed.stdout
    assert f"epoch {on_disk + 1}/4" in resumed.stdout and "epoch 1/4" not in resumed.stdout
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert json.dumps(history[:on_disk]) == json.dumps(before)  # checkpointed epochs are kept (NaN-safe compare)
    # lr during epoch e is 0.01 * 0.99**e: the schedule continues where it stopped, not from the start.
    assert [h["lr"] for h in history] == pytest.approx([0.01 * 0.99**e for e in range(EPOCHS)])
    assert _iterations(run_dir) == EPOCHS * STEPS
    validated = [h["epoch"] for h in history if np.isfinite(h["val_auc"])]
    assert validated == [e for e in range(1, EPOCHS + 1) if e % every == 0 or e == EPOCHS]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_done"] == EPOCHS
    assert summary["best_val_auc"] == max(h["val_auc"] for h in history if np.isfinite(h["val_auc"]))
    assert (run_dir / "curves.png").is_file() and (run_dir / "roc.png").is_file()

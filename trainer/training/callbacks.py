"""The end-of-epoch work of a run: validation AUC, best/last weights, checkpoint, history, plots and ETA."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from device.atomic import fsync_dir
from trainer.training.checkpoint import TrainingCheckpoint
from trainer.training.run_folder import RunFolder

BEST_WEIGHTS = "best.weights.h5"
LAST_WEIGHTS = "last.weights.h5"


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    """``model.save_weights`` through a fsynced temporary file and a rename."""
    tmp = path.with_name(path.name.replace(".weights.h5", f".{os.getpid()}.tmp.weights.h5"))
    model.save_weights(tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def predict_referable(cam_model: keras.Model, sequences: list) -> np.ndarray:
    """Mean referable probability over ``sequences`` (the plain images, and their flips for TTA)."""
    probs = [np.asarray(cam_model.predict(seq, verbose=0)["probs"], np.float64)[:, 1] for seq in sequences]
    return np.mean(probs, axis=0)


class EpochEnd(keras.callbacks.Callback):
    """Validate, keep the best model, checkpoint and log after every epoch.

    Args:
        run: the run folder.
        cam_model: the inference model (its weights are what best/last weights files hold).
        val_sequences: evaluation sequences of the validation split (one, or two with flip TTA).
        val_labels, val_ids: labels and ids of the validation images, in sequence order.
        state: run state, restored from the checkpoint on resume (``epochs_done``, ``history``, ``best_auc``...).
        lr_at_epoch: learning rate used during 0-based epoch e.
        total_epochs: epochs the run should reach.
        patience: early-stopping patience in epochs (None = never).
        log: where the one-line-per-epoch report goes.
        time_budget_s: stop after the first epoch that ends past this much training time (seconds).
    """

    def __init__(self, run: RunFolder, cam_model: keras.Model, val_sequences: list, val_labels: np.ndarray,
                 val_ids: np.ndarray, state: dict, lr_at_epoch: Callable[[int], float], total_epochs: int,
                 patience: int | None = None, log: Callable[[str], None] = print,
                 time_budget_s: float | None = None):
        super().__init__()
        self.run, self.cam_model, self.val_sequences = run, cam_model, val_sequences
        self.val_labels, self.val_ids, self.state = val_labels, val_ids, state
        self.lr_at_epoch, self.total_epochs, self.patience, self.log = lr_at_epoch, total_epochs, patience, log
        self.checkpoint = TrainingCheckpoint(run.path)
        self.time_budget_s = time_budget_s
        self._start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        from sklearn.metrics import roc_auc_score

        probs = predict_referable(self.cam_model, self.val_sequences)
        auc = float(roc_auc_score(self.val_labels, probs)) if np.unique(self.val_labels).size == 2 else float("nan")
        logs["val_auc"] = auc
        seconds = time.monotonic() - self._start
        row = {"epoch": epoch + 1, "loss": float(logs.get("loss", math.nan)),
               "accuracy": float(logs.get("accuracy", math.nan)), "val_auc": auc,
               "lr": float(self.lr_at_epoch(epoch)), "seconds": round(seconds, 2)}
        state = self.state
        state["history"].append(row)
        if not auc <= state.get("best_auc", -1.0):  # also true for the first finite AUC
            state.update(best_auc=auc, best_epoch=epoch + 1)
            save_weights_atomic(self.cam_model, self.run.file(BEST_WEIGHTS))
            roc = self.run.write_roc(self.val_labels, probs, f"{self.run.path.name}: best epoch {epoch + 1}")
            self.run.write_predictions(self.val_ids, self.val_labels, probs)
            state["best_roc"] = roc
        save_weights_atomic(self.cam_model, self.run.file(LAST_WEIGHTS))
        state["epochs_done"] = epoch + 1
        state["train_seconds"] = state.get("train_seconds", 0.0) + seconds
        if self.patience and epoch + 1 - state.get("best_epoch", 0) >= self.patience:
            state["stopped_early"] = True
            self.model.stop_training = True
        if self.time_budget_s and state["train_seconds"] >= self.time_budget_s and epoch + 1 < self.total_epochs:
            state["stopped_by_time_budget"] = True
            self.model.stop_training = True
        # Checkpoint last: after a kill, the run resumes from the last epoch whose files are all written.
        self.checkpoint.save(self.model, self.model.optimizer, state)
        self.run.write_history(state["history"])
        recent = [h["seconds"] for h in state["history"][-5:]]
        eta_s = np.mean(recent) * (self.total_epochs - epoch - 1)
        if self.time_budget_s:  # the run stops after the epoch that crosses the budget
            eta_s = min(eta_s, max(0.0, self.time_budget_s - state["train_seconds"]) + np.mean(recent))
        eta_min = 0.0 if self.model.stop_training else eta_s / 60.0
        self.log(f"epoch {epoch + 1}/{self.total_epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.3f}  "
                 f"val_auc {auc:.4f}  best {state['best_auc']:.4f}@{state['best_epoch']}  lr {row['lr']:.5f}  "
                 f"{seconds:.1f} s/epoch  ETA {eta_min:.1f} min")

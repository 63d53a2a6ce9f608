"""The end-of-epoch work of a run: validation AUC, best/last weights, checkpoint, history, time budget and ETA.

What keeps it from stalling the accelerator (issue 15):

- validation every ``validate_every`` epochs and the checkpoint every ``checkpoint_every`` (both also after the
  last epoch, and the checkpoint after every new best AUC);
- the slow part of writing files, fsync and rename, runs in one background thread (:class:`BackgroundWriter`)
  while the next epoch trains; the training thread only copies the variables (a memcpy) and writes the weights
  file into the page cache. Files are still written in order (best weights, last weights, checkpoint), so after a
  kill the checkpoint never names an epoch whose weights are missing;
- ``curves.png`` and ``roc.png`` are drawn once, when the session ends;
- the time budget counts wall-clock time (loading, compiling, training, validation, checkpoints) summed over
  resumed sessions, and no epoch is started that is not expected to finish, with its validation and checkpoint,
  inside it.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from device.atomic import fsync_dir
from trainer.training.checkpoint import TrainingCheckpoint
from trainer.training.run_folder import RunFolder, roc_points

BEST_WEIGHTS = "best.weights.h5"
LAST_WEIGHTS = "last.weights.h5"
RECENT_EPOCHS = 3  # epochs whose mean duration predicts the next one


def _fsync_and_rename(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _save_weights_tmp(model: keras.Model, path: Path, tag: str = "") -> Path:
    tmp = path.with_name(path.name.replace(".weights.h5", f".{os.getpid()}{tag}.tmp.weights.h5"))
    model.save_weights(tmp)
    return tmp


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    """``model.save_weights`` through a fsynced temporary file and a rename."""
    _fsync_and_rename(_save_weights_tmp(model, path), path)


def predict_referable(cam_model: keras.Model, sequences: list) -> np.ndarray:
    """Mean referable probability over ``sequences`` (the plain images, and their flips for TTA)."""
    probs = [np.asarray(cam_model.predict(seq, verbose=0)["probs"], np.float64)[:, 1] for seq in sequences]
    return np.mean(probs, axis=0)


class BackgroundWriter:
    """One thread that runs file-writing jobs in the order they were submitted.

    ``wait()`` blocks until every job is done and re-raises the first error of a job (e.g. a full disk), so a
    failed write stops the run at the next epoch end instead of going unnoticed.
    """

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="run-folder-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:  # after a failure, later files would be inconsistent: skip them
                    job()
            except BaseException as err:  # noqa: BLE001 - re-raised in the training thread by wait()
                self._error = err
            finally:
                self._jobs.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` after the ones already queued."""
        self._raise()
        self._jobs.put(job)

    def wait(self) -> None:
        """Block until every queued job has run; raise the first error one of them had."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Finish the queued jobs and stop the thread."""
        self._jobs.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


class EpochEnd(keras.callbacks.Callback):
    """Validate, keep the best model, checkpoint, enforce the time budget and log at the end of each epoch.

    Args:
        run: the run folder.
        cam_model: the inference model (its weights are what best/last weights files hold).
        val_sequences: evaluation sequences of the validation split (one, or two with flip TTA).
        val_labels, val_ids: labels and ids of the validation images, in sequence order.
        state: run state, restored from the checkpoint on resume (``epochs_done``, ``history``, ``best_auc``,
            ``wall_seconds``...); updated in place.
        lr_at_epoch: learning rate used during 0-based epoch e.
        total_epochs: epochs the run should reach.
        patience: early-stopping patience in epochs (None = never).
        log: where the one-line-per-epoch report goes.
        time_budget_s: wall-clock seconds for the whole run (all sessions); None = no limit.
        validate_every: validate after every k-th epoch (and the last one).
        checkpoint_every: checkpoint and write the last weights after every k-th epoch (and the last one, and
            after a new best AUC).
        session_start: ``time.monotonic()`` when this session began (default: now); time before the first epoch
            (loading, building) counts towards the budget from there.
    """

    def __init__(self, run: RunFolder, cam_model: keras.Model, val_sequences: list, val_labels: np.ndarray,
                 val_ids: np.ndarray, state: dict, lr_at_epoch: Callable[[int], float], total_epochs: int,
                 patience: int | None = None, log: Callable[[str], None] = print,
                 time_budget_s: float | None = None, validate_every: int = 1, checkpoint_every: int = 1,
                 session_start: float | None = None):
        super().__init__()
        self.run, self.cam_model, self.val_sequences = run, cam_model, val_sequences
        self.val_labels, self.val_ids, self.state = val_labels, val_ids, state
        self.lr_at_epoch, self.total_epochs, self.patience, self.log = lr_at_epoch, total_epochs, patience, log
        self.checkpoint = TrainingCheckpoint(run.path)
        self.time_budget_s = time_budget_s
        self.validate_every, self.checkpoint_every = validate_every, checkpoint_every
        self.session_start = time.monotonic() if session_start is None else session_start
        self.wall_before = float(state.get("wall_seconds", 0.0))  # earlier sessions, up to their last checkpoint
        self.writer: BackgroundWriter | None = None
        self._epoch_start = self._mark = self._after = time.monotonic()
        # Per epoch of this session: wall seconds from the end of the previous epoch end to this one's start
        # (training, the pipeline, other callbacks; the first also compiled the step).
        self._base_s: list[float] = []
        self._val_s = self._ckpt_s = 0.0  # last measured cost of a validation and of a checkpoint
        self._checkpointed = int(state.get("epochs_done", 0))
        self._validated: set[int] = set()

    # --- timing -------------------------------------------------------------------------------------------------
    def wall_seconds(self) -> float:
        """Wall-clock seconds the run has used: earlier sessions (to their last checkpoint) plus this one so far."""
        return self.wall_before + time.monotonic() - self.session_start

    def _expected_epoch_s(self) -> float:
        """Expected wall seconds of one more epoch with a validation and a checkpoint after it."""
        recent = self._base_s[1:] or self._base_s  # the session's first epoch also compiled the step
        train_s = float(np.mean(recent[-RECENT_EPOCHS:]))
        val_s = self._val_s
        if not self._validated:  # not measured yet: as many training steps as validation batches (an overestimate)
            steps = max(1, int((self.params or {}).get("steps") or 1))
            val_s = train_s * sum(len(seq) for seq in self.val_sequences) / steps
        return train_s + val_s + self._ckpt_s

    # --- Keras hooks --------------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.writer = BackgroundWriter()
        self._mark = self._after = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        done = epoch + 1
        now = time.monotonic()
        train_s = now - self._epoch_start
        self._base_s.append(now - self._after)
        self.writer.wait()  # the previous epoch's files (written while this epoch trained); raises their errors
        state = self.state
        last = done >= self.total_epochs
        auc, improved = math.nan, False
        if done % self.validate_every == 0 or last:
            auc, improved = self._validate(epoch)
        if self.patience and done - state.get("best_epoch", 0) >= self.patience and done in self._validated:
            state["stopped_early"] = True
            self.model.stop_training = True
        checkpoint = done % self.checkpoint_every == 0 or last or improved or self.model.stop_training
        if self.time_budget_s and not last and not self.model.stop_training:
            # Stop now unless the next epoch, with a validation and a checkpoint after it (it might be the last),
            # is expected to end inside the budget.
            pending = self._ckpt_s if checkpoint else 0.0  # this epoch's own checkpoint, when it is due anyway
            needed = self.wall_seconds() + pending + self._expected_epoch_s()
            if needed > self.time_budget_s:
                state.update(stopped_by_time_budget=True, budget_needed_s=round(needed, 3))
                self.model.stop_training = True
                if done not in self._validated:
                    auc, improved = self._validate(epoch)
                checkpoint = True
        if done in self._validated:
            logs["val_auc"] = auc
        row = {"epoch": done, "loss": float(logs.get("loss", math.nan)),
               "accuracy": float(logs.get("accuracy", math.nan)), "val_auc": auc,
               "lr": float(self.lr_at_epoch(epoch)), "seconds": 0.0, "train_seconds": round(train_s, 2)}
        state["history"].append(row)
        state["epochs_done"] = done
        state["train_seconds"] = state.get("train_seconds", 0.0) + train_s
        # The epoch's wall time since the previous epoch end: training, validation, writes (a checkpoint's copy
        # counts in the next epoch's row, so every second is in some row).
        self._mark, previous = time.monotonic(), self._mark
        row["seconds"] = round(self._mark - previous, 2)
        if checkpoint:
            self._checkpoint(done)
        history = [dict(h) for h in state["history"]]
        self.writer.submit(lambda: self.run.write_history(history))
        self._log(row, train_s)
        self._after = time.monotonic()

    def on_train_end(self, logs=None):
        try:
            self.writer.wait()
            done = int(self.state.get("epochs_done", 0))
            if done > self._checkpointed:  # stopped by another callback after our epoch end: finish that epoch
                if done not in self._validated:
                    auc, _ = self._validate(done - 1)
                    self.state["history"][-1]["val_auc"] = auc
                self._checkpoint(done)
            self.writer.wait()
        finally:
            self.writer.close()
        self.run.write_history(self.state["history"], plot=True)
        roc = self.state.get("best_roc")
        if roc:
            self.run.plot_roc(roc, f"{self.run.path.name}: best epoch {self.state['best_epoch']}")

    # --- work ---------------------------------------------------------------------------------------------------
    def _validate(self, epoch: int) -> tuple[float, bool]:
        """Validation AUC of the epoch; on a new best, the best weights and predictions are written."""
        start = time.monotonic()
        probs = predict_referable(self.cam_model, self.val_sequences)
        two_classes = np.unique(self.val_labels).size == 2
        auc = float(roc_points(self.val_labels, probs)["auc"]) if two_classes else math.nan
        self._validated.add(epoch + 1)
        state = self.state
        improved = not auc <= state.get("best_auc", -1.0)  # also true for the first finite AUC
        if improved:
            state.update(best_auc=auc, best_epoch=epoch + 1, best_roc=roc_points(self.val_labels, probs))
            path = self.run.file(BEST_WEIGHTS)
            tmp = _save_weights_tmp(self.cam_model, path)
            ids, labels = self.val_ids, self.val_labels
            self.writer.submit(lambda: _fsync_and_rename(tmp, path))
            self.writer.submit(lambda: self.run.write_predictions(ids, labels, probs))
        self._val_s = time.monotonic() - start
        return auc, improved

    def _checkpoint(self, done: int) -> None:
        """Last weights and the checkpoint of ``done`` epochs: copied now, fsynced and renamed in the background."""
        start = time.monotonic()
        self.state["wall_seconds"] = self.wall_seconds()
        self.state["expected_epoch_s"] = round(self._expected_epoch_s(), 3)  # for a resumed run's budget check
        path = self.run.file(LAST_WEIGHTS)
        tmp = _save_weights_tmp(self.cam_model, path)
        snapshot = self.checkpoint.snapshot(self.model, self.model.optimizer, self.state)
        self.writer.submit(lambda: _fsync_and_rename(tmp, path))
        # Checkpoint last: after a kill, the run resumes from the last epoch whose files are all written.
        self.writer.submit(lambda: self.checkpoint.write(snapshot))
        self._checkpointed = done
        self._ckpt_s = time.monotonic() - start

    def _log(self, row: dict, train_s: float) -> None:
        state, done = self.state, row["epoch"]
        eta_s = self._expected_epoch_s() * (self.total_epochs - done)
        if self.time_budget_s:
            eta_s = min(eta_s, max(0.0, self.time_budget_s - self.wall_seconds()))
        eta_min = 0.0 if self.model.stop_training else eta_s / 60.0
        auc = f"{row['val_auc']:.4f}" if done in self._validated else "  -   "
        best = f"{state['best_auc']:.4f}@{state['best_epoch']}" if state.get("best_epoch") else "  -   "
        self.log(f"epoch {done}/{self.total_epochs}  loss {row['loss']:.4f}  acc {row['accuracy']:.3f}  "
                 f"val_auc {auc}  best {best}  "
                 f"lr {row['lr']:.5f}  {row['seconds']:.1f} s/epoch ({train_s:.1f} training)  ETA {eta_min:.1f} min"
                 + ("  (checkpoint)" if self._checkpointed == done else ""))

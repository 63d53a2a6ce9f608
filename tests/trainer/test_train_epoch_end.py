"""Epoch ends that do not stall training: validation and checkpoints every k epochs, files written in the
background, plots at the end, and a time budget that counts wall-clock time (issue 15)."""

from __future__ import annotations

import json
import math
import time

import keras
import pytest

from trainer.training.callbacks import BackgroundWriter
from trainer.training.checkpoint import TrainingCheckpoint
from trainer.training.config import load_train_config
from trainer.training.train import train


def test_background_writer_keeps_the_order_and_reports_the_first_failure():
    writer, done = BackgroundWriter(), []
    for i in range(5):
        writer.submit(lambda i=i: (time.sleep(0.01 * (5 - i)), done.append(i)))
    writer.wait()
    assert done == [0, 1, 2, 3, 4]  # one thread, in submission order: the checkpoint always lands last

    def full_disk():
        raise OSError(28, "No space left on device")

    writer.submit(full_disk)
    writer.submit(lambda: done.append("after the failure"))
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    assert "after the failure" not in done  # later files would be inconsistent with the failed one: skipped
    with pytest.raises(OSError):
        writer.submit(lambda: None)  # and the run stops at its next epoch end instead of going on silently
    with pytest.raises(OSError):
        writer.close()


class _FilesAtEpochEnd(keras.callbacks.Callback):
    """Records, after the run's own epoch end, which plots exist."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir, self.plots = run_dir, []

    def on_epoch_end(self, epoch, logs=None):
        self.plots.append(sorted(p.name for p in self.run_dir.glob("*.png")))


@pytest.mark.slow
def test_validation_and_checkpoints_every_k_epochs_and_plots_only_at_the_end(synthetic_kaggle, tmp_path):
    run_dir, lines = tmp_path / "run", []
    cfg = load_train_config("tiny", overrides={"data.path": str(synthetic_kaggle), "epochs": 5,
                                               "validate_every": 2, "checkpoint_every": 2})
    files = _FilesAtEpochEnd(run_dir)
    summary = train(cfg, run_dir, log=lines.append, callbacks=[files])
    history = json.loads((run_dir / "history.json").read_text())
    assert [math.isfinite(h["val_auc"]) for h in history] == [False, True, False, True, True]  # 2, 4 and the last
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.endswith("(checkpoint)") for e in epochs] == [False, True, False, True, True]
    assert "val_auc   -" in epochs[0]
    assert files.plots == [[]] * 5  # no plot redrawn at an epoch end
    assert (run_dir / "curves.png").is_file() and (run_dir / "roc.png").is_file()  # drawn once, at the end
    state = TrainingCheckpoint(run_dir).read_state()
    assert state["epochs_done"] == summary["epochs_done"] == 5
    assert summary["best_epoch"] in (2, 4, 5)
    assert summary["best_val_auc"] == max(h["val_auc"] for h in history if math.isfinite(h["val_auc"]))
    assert json.dumps(state["history"]) == json.dumps(history)


class _SlowEpochEnd(keras.callbacks.Callback):
    """Wall time the old budget never saw: seconds spent outside the epochs' own training loop."""

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(SLOW_S)


SLOW_S = 0.4


@pytest.mark.slow
def test_time_budget_counts_wall_time_and_a_larger_budget_resumes_the_run(synthetic_kaggle, tmp_path):
    run_dir, budget_min, lines = tmp_path / "run", 0.3, []
    cfg = load_train_config("tiny", overrides={"data.path": str(synthetic_kaggle), "epochs": 200,
                                               "time_budget_minutes": budget_min})
    start = time.monotonic()
    summary = train(cfg, run_dir, callbacks=[_SlowEpochEnd()], log=lines.append)
    session_s = time.monotonic() - start
    assert summary["stopped_by_time_budget"] and 2 <= summary["epochs_done"] < 200
    # The budget is wall time: loading and building, the slow epoch ends and validation count, and the run
    # stops before an epoch that would end past it (slack: one epoch's variation on this loaded machine). After
    # the last checkpoint only the plots and the summary remain (seconds: the first matplotlib import).
    assert summary["wall_seconds"] <= budget_min * 60 + 2.0 and session_s <= budget_min * 60 + 10.0
    assert summary["train_seconds"] < summary["wall_seconds"] - SLOW_S * (summary["epochs_done"] - 1)
    assert TrainingCheckpoint(run_dir).read_state()["epochs_done"] == summary["epochs_done"]  # stopped resumably

    same = train(cfg, run_dir, resume=True, log=lines.append)  # the budget is spent: nothing more is trained
    assert same["epochs_done"] == summary["epochs_done"]
    assert any("time budget of 0.3 min is spent" in line for line in lines)
    more = cfg.model_copy(update={"time_budget_minutes": budget_min + 0.1})
    longer = train(more, run_dir, resume=True, log=lines.append)
    assert longer["epochs_done"] > summary["epochs_done"] and longer["wall_seconds"] <= (budget_min + 0.1) * 60 + 2.0
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, longer["epochs_done"] + 1))
    assert json.loads((run_dir / "config.json").read_text())["time_budget_minutes"] == budget_min + 0.1

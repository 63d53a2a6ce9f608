"""The run folder: everything one training run leaves behind, each file written atomically.

::

    runs/<name>/
      config.json          frozen TrainConfig (reload with load_train_config(preset=None, path=...))
      version.json         code version (git describe --always --dirty), Keras/backend/Python versions, host, devices
      data.json            data summary: source, crop size, images/patients/referable per split, skipped images
      history.csv/.json    one row per epoch: loss, accuracy, val_auc (NaN when not validated), lr, seconds (wall,
                           epoch end included), train_seconds (the fit loop only)
      curves.png           training curves (loss, accuracy, validation AUC, learning rate); drawn at the end
      roc.png              validation ROC curve of the best epoch, AUC in the legend; drawn at the end
      val_predictions.csv  image id, label, probability of the best epoch (for the evaluation step)
      summary.json         best validation AUC/epoch, ROC points, epochs done, timings
      best.weights.h5      CAM-model weights of the best epoch (trainer.training.train.load_run_model)
      last.weights.h5      CAM-model weights of the last finished epoch
      checkpoint.npz       full training state for --resume (trainer.training.checkpoint)
      tensorboard/         TensorBoard logs (TensorFlow backend)
"""

from __future__ import annotations

import csv
import io
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from device.atomic import write_atomic

HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_auc", "lr", "seconds", "train_seconds")


def code_version(repo: Path | None = None) -> str:
    """``git describe --always --dirty`` of the source tree, or ``unknown`` outside a git checkout."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunFolder:
    """Paths and writers of one run folder.

    Args:
        path: the folder (created if missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        """Path of a file inside the run folder."""
        return self.path / name

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def write_json(self, name: str, payload) -> Path:
        """Atomically write ``payload`` as indented JSON."""
        path = self.file(name)
        write_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode("utf-8"))
        return path

    def read_json(self, name: str):
        """Read a JSON file of the run folder."""
        return json.loads(self.file(name).read_text(encoding="utf-8"))

    def write_version(self, backend: str, devices: list[str], extra: dict | None = None) -> None:
        """Record the code version and the software/hardware the run used."""
        import keras

        self.write_json("version.json", {
            "code_version": code_version(), "keras": keras.__version__, "backend": backend,
            "python": sys.version.split()[0], "host": platform.node(), "machine": platform.machine(),
            "devices": devices, **(extra or {}),
        })

    def write_history(self, history: list[dict], plot: bool = False) -> None:
        """Write the per-epoch history as CSV and JSON; with ``plot``, redraw the training curves (``curves.png``,
        a second or so of matplotlib: done once at the end of a session, not after every epoch)."""
        self.write_json("history.json", history)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(HISTORY_KEYS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
        write_atomic(self.file("history.csv"), buffer.getvalue().encode("utf-8"))
        if history and plot:
            self._save_figure(_curves_figure(history), "curves.png")

    def write_roc(self, labels: np.ndarray, probs: np.ndarray, title: str) -> dict:
        """Draw the ROC curve of validation predictions; returns AUC and the curve points."""
        roc = roc_points(labels, probs)
        self.plot_roc(roc, title)
        return roc

    def plot_roc(self, roc: dict, title: str) -> None:
        """Draw ``roc.png`` from the points of :func:`roc_points`."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
        ax.plot(roc["fpr"], roc["tpr"], lw=2, label=f"validation AUC {roc['auc']:.3f} (n={roc.get('images', '?')}, "
                f"{roc.get('referable', '?')} referable)")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=7)
        self._save_figure(fig, "roc.png")

    def write_predictions(self, ids: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> None:
        """Validation predictions of the best epoch (image id, referable label, referable probability)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image", "label", "prob_referable"])
        writer.writerows(zip(ids.tolist(), labels.astype(int).tolist(), [f"{p:.6f}" for p in probs]))
        write_atomic(self.file("val_predictions.csv"), buffer.getvalue().encode("utf-8"))

    def _save_figure(self, fig, name: str) -> None:
        from matplotlib import pyplot as plt

        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        write_atomic(self.file(name), buffer.getvalue())


def roc_points(labels: np.ndarray, probs: np.ndarray) -> dict:
    """AUC, ROC points and counts of validation predictions (what ``roc.png`` and ``summary.json`` show)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, probs)
    return {"auc": float(roc_auc_score(labels, probs)), "fpr": [round(float(x), 5) for x in fpr],
            "tpr": [round(float(x), 5) for x in tpr], "images": int(labels.size), "referable": int(labels.sum())}


def _curves_figure(history: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), dpi=100)
    axes[0].plot(epochs, [h["loss"] for h in history], label="training loss (incl. L2)")
    axes[0].set(xlabel="epoch", ylabel="loss")
    axes[1].plot(epochs, [h["accuracy"] for h in history], label="training accuracy (augmented)")
    validated = [h for h in history if np.isfinite(h["val_auc"])]  # validate_every > 1 leaves NaN between
    if validated:
        axes[1].plot([h["epoch"] for h in validated], [h["val_auc"] for h in validated], marker=".",
                     label="validation AUC")
        best = max(validated, key=lambda h: h["val_auc"])
        axes[1].scatter([best["epoch"]], [best["val_auc"]], color="red", zorder=3,
                        label=f"best AUC {best['val_auc']:.3f} @ {best['epoch']}")
    axes[1].set(xlabel="epoch", ylim=(0.3, 1.0))
    axes[2].plot(epochs, [h["lr"] for h in history])
    axes[2].set(xlabel="epoch", ylabel="learning rate")
    for ax in axes[:2]:
        ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig

"""Plots of the quality gate's calibration: one per check (gradable vs rejected distributions, the threshold)
and one of the learned score. Histograms of measured numbers only: no photograph is reproduced."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.quality_fit import RULES
from device.quality_score import GradabilityScore

GROUPS = (  # (label, selector, colour)
    ("EyeQ Good", lambda r: r["source"] == "eyeq" and r["grade"] == 0 and r["variant"] == "original", "tab:green"),
    ("IDRiD", lambda r: r["source"] == "idrid" and r["variant"] == "original", "tab:blue"),
    ("DiaretDB1", lambda r: r["source"] == "diaretdb1" and r["variant"] == "original", "tab:cyan"),
    ("Kaggle originals", lambda r: r["source"] == "kaggle" and r["variant"] == "original", "tab:olive"),
    ("EyeQ Reject", lambda r: r["source"] == "eyeq" and r["grade"] == 2 and r["variant"] == "original", "tab:red"),
)


def _hist(ax, values, label, colour, bins, dashed=False):
    if len(values):
        ax.hist(values, bins=bins, density=True, histtype="step", linewidth=1.6, color=colour,
                linestyle="--" if dashed else "-", label=f"{label} ({len(values)})")


def plot_all(rows: list[dict], thresholds: dict[str, float], score: GradabilityScore, oof: np.ndarray,
             scored: list[dict], folder: Path, checks: bool = True, score_file: str = "quality_score.png",
             score_title: str = "Quality gate: gradability score") -> list[Path]:
    """Write quality_<metric>.png per check (unless ``checks`` is False) and the score's plot into ``folder``;
    returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if not r["error"]]
    paths = []
    for field, metric, side, kind, log in RULES if checks else ():
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        values = [r[metric] for r in ok]
        lo, hi = max(min(values), 1e-4) if log else min(values), max(values)
        bins = np.geomspace(lo, hi * 1.01, 60) if log else np.linspace(lo, hi, 60)
        for label, sel, colour in GROUPS:
            _hist(ax, [max(r[metric], lo) for r in ok if sel(r)], label, colour, bins)
        _hist(ax, [max(r[metric], lo) for r in ok if r["variant"] == kind], f"degraded: {kind}", "black", bins, True)
        ax.axvline(thresholds[field], color="tab:purple", linewidth=2, label=f"{field} = {thresholds[field]:.3g}")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(f"{metric} ({'low' if side == 'low' else 'high'} fails)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="best")
        ax.set_title(f"Quality gate: {metric}", fontsize=10)
        fig.tight_layout()
        paths.append(folder / f"quality_{metric}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    logit = np.log(np.clip(oof, 1e-6, 1 - 1e-6) / (1 - np.clip(oof, 1e-6, 1 - 1e-6)))
    bins = np.linspace(logit.min(), logit.max(), 50)
    usable = ("EyeQ Usable", lambda r: r["source"] == "eyeq" and r["grade"] == 1, "tab:orange")
    groups = (*GROUPS[:4], usable, GROUPS[4])
    for label, sel, colour in groups:
        _hist(ax, logit[[sel(r) for r in scored]], label, colour, bins)
    t = score.threshold
    ax.axvline(np.log(t / (1 - t)), color="tab:purple", linewidth=2, label=f"threshold P = {t:.3g}")
    ax.set_xlabel("learned score, logit of P(ungradable), out-of-fold (photographs the checks pass)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(score_title, fontsize=10)
    fig.tight_layout()
    paths.append(folder / score_file)
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths

"""ROC and FROC figures (matplotlib, Agg backend), returned as PNG bytes so the caller writes them atomically."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from trainer.evaluate.paper import PAPER

SUBSET_STYLE = {"all": ("tab:blue", "all {n}"), "test": ("tab:orange", "test {n}")}
TYPE_TITLES = {"haemorrhages": "Haemorrhages", "hard_exudates": "Hard exudates", "soft_exudates": "Soft exudates",
               "red_small_dots": "Red small dots"}


def _style(name: str, metrics: dict[str, Any]) -> tuple[str, str]:
    colour, label = SUBSET_STYLE.get(name, ("tab:gray", name))
    return colour, label.format(n=metrics["n_images"])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def roc_png(results: dict[str, tuple], model_id: str) -> bytes:
    """ROC curves of every subset with their AUC (95 % CI), and the paper's operating point.

    Args:
        results: ``{subset: (metrics, ClassificationResult, curves)}`` from :func:`subset_metrics`.
        model_id: shown in the title.
    """
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    for name, (metrics, cls, _) in results.items():
        colour, label = _style(name, metrics)
        ci = metrics["auc_ci95"]
        auc = "n/a" if metrics["auc"] is None else f"{metrics['auc']:.3f}"
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        if metrics["auc"] is not None:  # with one class only there is no curve to draw
            ax.plot(cls.fpr, cls.tpr, color=colour, lw=2,
                    label=f"{label} ({metrics['n_diseased']} diseased / {metrics['n_healthy']} healthy): "
                          f"AUC {auc}{ci_text}")
        if metrics["sensitivity"] is not None and metrics["specificity"] is not None:
            ax.plot(1 - metrics["specificity"], metrics["sensitivity"], "o", color=colour, ms=7,
                    label=f"{label} at threshold {metrics['decision_threshold']:.2f}")
    ax.plot(1 - PAPER["specificity"], PAPER["sensitivity"], "k*", ms=12,
            label=f"paper: AUC {PAPER['auc']}, sens {PAPER['sensitivity']:.1%}, spec {PAPER['specificity']:.1%}")
    ax.plot([0, 1], [0, 1], ":", color="0.6", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (healthy images called referable)",
           ylabel="sensitivity (diseased images called referable)",
           title=f"DiaretDB1 diseased vs healthy — {model_id}")
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def froc_png(results: dict[str, tuple], model_id: str, report_rate: float = 1.5, max_rate: float = 8.0) -> bytes:
    """One FROC panel per lesion type: the paper's rule (solid) and the any-pixel rule (dashed) per subset.

    Args:
        results: ``{subset: (metrics, ClassificationResult, {type: (paper curve, any-pixel curve)})}``.
        model_id: shown in the title.
        report_rate: FP/image of the headline sensitivity (vertical line; paper's value as a star).
        max_rate: x-axis limit (FP/image).
    """
    types = list(next(iter(results.values()))[2])
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.5), sharex=True, sharey=True)
    for ax, lesion_type in zip(axes.ravel(), types):
        for name, (metrics, _, curves) in results.items():
            colour, label = _style(name, metrics)
            paper_curve, any_curve = curves[lesion_type]
            lesion = metrics["lesions"][lesion_type]
            sens = lesion[f"froc_sensitivity_at_{report_rate:g}"]
            sens_text = "n/a" if sens is None else f"{sens:.0%}"
            ax.plot(paper_curve.fp_per_image, paper_curve.sensitivity, "-", color=colour, lw=2, drawstyle="default",
                    label=f"{label}: {lesion['n_lesions']} lesions, {sens_text} at {report_rate:g}")
            ax.plot(any_curve.fp_per_image, any_curve.sensitivity, "--", color=colour, lw=1.2,
                    label=f"{label}, any-pixel rule")
        paper_value = PAPER["froc_at_1.5"].get(lesion_type)
        if paper_value is not None and report_rate == 1.5:
            ax.plot(1.5, paper_value, "k*", ms=11, label=f"paper: {paper_value:.0%} at 1.5")
        ax.axvline(report_rate, color="0.5", lw=0.8, ls=":")
        ax.set_title(TYPE_TITLES.get(lesion_type, lesion_type))
        ax.set_xlim(0, max_rate)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=6.5)
    for ax in axes[1]:
        ax.set_xlabel("false positives per image")
    for ax in axes[:, 0]:
        ax.set_ylabel("lesion sensitivity")
    fig.suptitle(f"DiaretDB1 lesion-level FROC — {model_id}", fontsize=11)
    return _png(fig)


def curves_payload(results: dict[str, tuple]) -> dict[str, Any]:
    """The plotted points, for anyone who wants to redraw the figures."""
    return {name: {"roc": {"fpr": cls.fpr.round(5).tolist(), "tpr": cls.tpr.round(5).tolist()}}
            for name, (_, cls, _) in results.items()}

"""Diseased vs healthy: ROC, AUC with a bootstrap 95 % interval, sensitivity and specificity at a threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from trainer.evaluate.bootstrap import percentile_ci, ratio_ci, safe_ratio


@dataclass(frozen=True)
class ClassificationResult:
    """Image-level classification metrics (None where a class is absent).

    Attributes:
        auc, auc_ci95: area under the ROC curve and its bootstrap 95 % interval.
        sensitivity, sensitivity_ci95: diseased images with prob >= threshold.
        specificity, specificity_ci95: healthy images with prob < threshold.
        threshold: the decision threshold used.
        fpr, tpr: the ROC curve (for the plot).
        n_diseased, n_healthy: class sizes.
    """

    auc: float | None
    auc_ci95: list[float] | None
    sensitivity: float | None
    sensitivity_ci95: list[float] | None
    specificity: float | None
    specificity_ci95: list[float] | None
    threshold: float
    fpr: np.ndarray
    tpr: np.ndarray
    n_diseased: int
    n_healthy: int


def classification_metrics(probs: np.ndarray, diseased: np.ndarray, threshold: float,
                           idx: np.ndarray) -> ClassificationResult:
    """Compute the classification metrics.

    Args:
        probs: (n,) referable probability per image.
        diseased: (n,) bool ground truth.
        threshold: referable when ``prob >= threshold``.
        idx: (n_boot, n) bootstrap indices (may be empty: no intervals).

    Returns:
        :class:`ClassificationResult`.
    """
    probs, diseased = np.asarray(probs, np.float64), np.asarray(diseased, bool)
    positive = probs >= threshold
    n_pos, n_neg = int(diseased.sum()), int((~diseased).sum())
    auc, auc_ci, fpr, tpr = None, None, np.array([0.0, 1.0]), np.array([0.0, 1.0])
    if n_pos and n_neg:
        auc = float(roc_auc_score(diseased, probs))
        fpr, tpr, _ = roc_curve(diseased, probs)
        samples = [roc_auc_score(diseased[s], probs[s]) for s in idx if 0 < diseased[s].sum() < len(s)]
        auc_ci = percentile_ci(np.array(samples)) if samples else None
    return ClassificationResult(
        auc=auc, auc_ci95=auc_ci,
        sensitivity=safe_ratio((positive & diseased).sum(), n_pos),
        sensitivity_ci95=ratio_ci(positive & diseased, diseased, idx),
        specificity=safe_ratio((~positive & ~diseased).sum(), n_neg),
        specificity_ci95=ratio_ci(~positive & ~diseased, ~diseased, idx),
        threshold=float(threshold), fpr=fpr, tpr=tpr, n_diseased=n_pos, n_healthy=n_neg,
    )

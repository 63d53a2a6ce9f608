"""Bootstrap over images: one seeded set of resampling indices shared by every metric of a report.

Sharing the indices keeps the confidence intervals of different metrics consistent (the same resampled
populations) and makes reruns bit-identical for a given seed.
"""

from __future__ import annotations

import numpy as np

CI_LEVEL = 0.95  # DESIGN.md §2.4: bootstrap 95 % confidence intervals


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) int array of image indices drawn with replacement (empty when n_boot or n is 0)."""
    if n_boot <= 0 or n <= 0:
        return np.zeros((0, n), np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_ci(samples: np.ndarray, level: float = CI_LEVEL) -> list[float] | None:
    """Percentile interval of the finite bootstrap samples, or None when there are none."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def ratio_ci(numerator: np.ndarray, denominator: np.ndarray, idx: np.ndarray) -> list[float] | None:
    """CI of ``sum(numerator) / sum(denominator)`` over resampled images (NaN samples with 0 denominators skipped).

    Args:
        numerator, denominator: per-image values (n,).
        idx: bootstrap indices from :func:`bootstrap_indices`.
    """
    if idx.size == 0:
        return None
    num = np.asarray(numerator, np.float64)[idx].sum(axis=1)
    den = np.asarray(denominator, np.float64)[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return percentile_ci(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))


def safe_ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is 0 (reported as null in metrics.json)."""
    return float(numerator) / float(denominator) if denominator else None

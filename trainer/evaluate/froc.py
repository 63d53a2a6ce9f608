"""Free-response ROC: lesion sensitivity against false positives per image, from a region-threshold sweep.

Each swept threshold gives one operating point (mean false positives per image, fraction of all lesions
detected). The curve starts at (0, 0) — a threshold above every CAM value proposes nothing — and is made
monotone by keeping, at each FP rate, the best sensitivity reached at or below it (the usual FROC envelope).
Between operating points it is interpolated linearly; beyond the largest FP rate reached it stays flat, and
``max_fp_per_image`` is reported so that a reader sees where the data end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.evaluate.bootstrap import percentile_ci


@dataclass(frozen=True)
class FROCCurve:
    """Operating points of one lesion type (arrays sorted by FP rate, starting at (0, 0)).

    Attributes:
        fp_per_image: mean false positives per image at each point.
        sensitivity: fraction of ground-truth lesions detected (monotone envelope).
        n_lesions: total ground-truth lesions.
    """

    fp_per_image: np.ndarray
    sensitivity: np.ndarray
    n_lesions: int

    def sensitivity_at(self, rate: float) -> float | None:
        """Sensitivity at ``rate`` false positives per image (linear interpolation), None without lesions."""
        if self.n_lesions == 0:
            return None
        return float(np.interp(rate, self.fp_per_image, self.sensitivity))

    def score(self, rates: tuple[float, ...]) -> float | None:
        """FROC score: mean sensitivity at ``rates`` (e.g. 1/8 … 8 FP/image)."""
        if self.n_lesions == 0:
            return None
        return float(np.mean(np.interp(rates, self.fp_per_image, self.sensitivity)))


def froc_curve(detected: np.ndarray, false_positives: np.ndarray, n_lesions: np.ndarray) -> FROCCurve:
    """Build the curve from per-image counts.

    Args:
        detected: (n_images, n_thresholds) detected lesions per image and threshold.
        false_positives: (n_images, n_thresholds) false-positive regions.
        n_lesions: (n_images,) ground-truth lesions per image.

    Returns:
        :class:`FROCCurve` (sensitivity 0 everywhere when there are no lesions).
    """
    n_images = max(1, detected.shape[0])
    total = int(np.sum(n_lesions))
    fp = np.concatenate([[0.0], false_positives.sum(axis=0) / n_images])
    sens = np.concatenate([[0.0], detected.sum(axis=0) / total if total else np.zeros(detected.shape[1])])
    fp, sens = envelope(fp, sens)
    return FROCCurve(fp, sens, total)


def envelope(fp: np.ndarray, sens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort points by FP rate, keep the best sensitivity at or below each rate, one point per distinct rate."""
    order = np.lexsort((sens, fp))  # by FP rate, ties by sensitivity (ascending: the last of a tie is the best)
    fp, sens = fp[order], np.maximum.accumulate(sens[order])
    last = np.append(fp[1:] != fp[:-1], True)
    return fp[last], sens[last]


def froc_bootstrap(detected: np.ndarray, false_positives: np.ndarray, n_lesions: np.ndarray, idx: np.ndarray,
                   report_rate: float, rates: tuple[float, ...]) -> tuple[list[float] | None, list[float] | None]:
    """95 % bootstrap intervals of (sensitivity at ``report_rate``, FROC score) over resampled images.

    Args:
        detected, false_positives, n_lesions: as for :func:`froc_curve`.
        idx: (n_boot, n_images) indices from :func:`trainer.evaluate.bootstrap.bootstrap_indices`.
        report_rate: FP/image of the headline sensitivity (1.5).
        rates: FP/image rates of the FROC score.
    """
    if idx.size == 0 or int(np.sum(n_lesions)) == 0:
        return None, None
    # the same curve construction as froc_curve, on all resamples at once (sums over the resampled images)
    n_img = idx.shape[1]
    totals = n_lesions[idx].sum(axis=1).astype(np.float64)
    fp = np.concatenate([np.zeros((len(idx), 1)), false_positives[idx].sum(axis=1) / n_img], axis=1)
    det = np.concatenate([np.zeros((len(idx), 1)), detected[idx].sum(axis=1).astype(np.float64)], axis=1)
    sens = det / np.where(totals > 0, totals, 1.0)[:, None]
    at_rate, scores = np.full(len(idx), np.nan), np.full(len(idx), np.nan)
    query = np.asarray((report_rate, *rates), np.float64)
    for b in np.flatnonzero(totals > 0):
        values = np.interp(query, *envelope(fp[b], sens[b]))
        at_rate[b], scores[b] = values[0], values[1:].mean()
    return percentile_ci(at_rate), percentile_ci(scores)

"""FROC by region score (the default sweep): regions fixed at the unit's threshold, ranked by their CAM maximum.

Paper §3.2/§4.3: regions P_i come from the normalised CAM at 0.65 and each has a score S_i, the CAM maximum inside
it. The FROC keeps the regions whose score is at least s and sweeps s from above the highest score (nothing
proposed: the origin) down to the lowest (every region: the unit's operating point). Scores are in raw CAM units,
so they are comparable across images (after per-image max normalisation every image's top region would score 1).

Sweeping the binarisation threshold instead (``froc_sweep="region_threshold"``) lets very low thresholds merge
the whole retina into one region that "covers" every lesion for a single false positive, which makes the FROC
look far better than the localisation is; the score sweep never builds regions larger than the unit shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.evaluate.matching import GroundTruth, overlaps

NEVER = -np.inf  # best score of a lesion no region detects


@dataclass(frozen=True)
class ScoredImage:
    """Per-region scores and per-lesion best scores of one image, at the operating region threshold.

    Attributes:
        region_scores: (n_regions,) raw CAM maximum inside each region.
        lesion_best: ``{type: (n_lesions,)}`` highest score of a region that detects the lesion (paper rule).
        lesion_best_any: ``{type: (n_lesions,)}`` highest score of a region touching it (any-pixel rule).
        region_fp: ``{type: (n_regions,) bool}`` false positives under the paper rule (in the protocol's scope).
        region_fp_any: ``{type: (n_regions,) bool}`` regions touching no lesion (same scope).
    """

    region_scores: np.ndarray
    lesion_best: dict[str, np.ndarray]
    lesion_best_any: dict[str, np.ndarray]
    region_fp: dict[str, np.ndarray]
    region_fp_any: dict[str, np.ndarray]


def region_peaks(heat: np.ndarray, labels: np.ndarray, n_regions: int) -> np.ndarray:
    """(n_regions,) maximum of ``heat`` inside each labelled region (labels 1..n)."""
    peaks = np.full(n_regions + 1, -np.inf, np.float64)
    fg = labels > 0
    np.maximum.at(peaks, labels[fg], heat[fg].astype(np.float64))
    return peaks[1:]


def score_image(labels: np.ndarray, areas: np.ndarray, scores: np.ndarray, gts: dict[str, GroundTruth],
                union: GroundTruth, at: dict[str, np.ndarray], at_union: np.ndarray, lesion_coverage: float,
                fp_iou: float, all_types: bool) -> ScoredImage:
    """Score-sweep detail of one image.

    Args:
        labels, areas: regions at the operating threshold (labels 1..n, ``areas[i - 1]``).
        scores: (n,) raw CAM maximum per region.
        gts: lesions per type; ``union``: lesions of all types together (the FP scope ``all_types``).
        at, at_union: region label at each ground-truth pixel of each type / of the union.
        lesion_coverage, fp_iou: the paper's rule.
        all_types: judge false positives against all types (``fp_scope="all_types"``).
    """
    n_p = int(areas.size)

    def detail(gt: GroundTruth, at_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if gt.n_lesions == 0 or n_p == 0:
            never = np.full(gt.n_lesions, NEVER)
            return never, never.copy(), np.ones(n_p, bool), np.ones(n_p, bool)
        coverage, touches, mean_iou = overlaps(labels, areas, gt, at_gt)
        covered = coverage >= lesion_coverage - 1e-12
        best = np.where(covered, scores[:, None], NEVER).max(axis=0)
        best_any = np.where(touches, scores[:, None], NEVER).max(axis=0)
        return best, best_any, mean_iou < fp_iou, ~touches.any(axis=1)

    shared = detail(union, at_union) if all_types else None
    out: dict[str, dict] = {"best": {}, "best_any": {}, "fp": {}, "fp_any": {}}
    for lesion_type, gt in gts.items():
        best, best_any, fp, fp_any = detail(gt, at[lesion_type])
        if shared is not None:
            fp, fp_any = shared[2], shared[3]
        out["best"][lesion_type], out["best_any"][lesion_type] = best, best_any
        out["fp"][lesion_type], out["fp_any"][lesion_type] = fp, fp_any
    return ScoredImage(np.asarray(scores, np.float64), out["best"], out["best_any"], out["fp"], out["fp_any"])


def score_matrices(images: list[ScoredImage], lesion_type: str) -> tuple[np.ndarray, ...]:
    """Per-image counts at every distinct region score of the subset (descending), for :func:`froc_curve`.

    Returns:
        ``(detected, detected_any, false_positives, false_positives_any)``, each int (n_images, n_scores);
        column k keeps the regions with score >= the k-th highest score.
    """
    all_scores = np.concatenate([im.region_scores for im in images]) if images else np.zeros(0)
    grid = np.unique(all_scores)[::-1]
    if grid.size == 0:
        zeros = np.zeros((len(images), 1), np.int64)
        return zeros, zeros.copy(), zeros.copy(), zeros.copy()

    def at_or_above(values: np.ndarray) -> np.ndarray:  # (len(grid),) count of values >= each grid score
        return (values[:, None] >= grid[None, :]).sum(axis=0) if values.size else np.zeros(grid.size, np.int64)

    rows = [(at_or_above(im.lesion_best[lesion_type]), at_or_above(im.lesion_best_any[lesion_type]),
             at_or_above(im.region_scores[im.region_fp[lesion_type]]),
             at_or_above(im.region_scores[im.region_fp_any[lesion_type]])) for im in images]
    return tuple(np.stack([r[k] for r in rows]).astype(np.int64) for k in range(4))

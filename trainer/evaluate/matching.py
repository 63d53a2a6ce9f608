"""Matching rules between region proposals and ground-truth lesions, on plain arrays (paper §4.3).

For one image, one lesion type T and one set of regions P_i (a label image):

- G_j are the connected components of T's ground-truth mask (same connectivity as the regions).
- **Paper rule, lesion level**: G_j is detected when a single region covers at least ``lesion_coverage`` (50 %)
  of G_j's pixels. A region is a false positive when the mean IoU between it and the G_j it touches (>= 1 common
  pixel) is below ``fp_iou`` (0.5); a region that touches no G_j has mean IoU 0.
- **Any-pixel rule** (ROC challenge): G_j is detected when any region touches it; a region is a false positive
  when it touches no G_j.
- **False-positive scope**: the CAM is class-agnostic, so by default (``fp_scope="all_types"``) a region is
  judged against the lesions of all four types together (components of their union): a region that
  outlines a hard exudate is not a false positive of the haemorrhage FROC. ``fp_scope="per_type"`` judges it
  against type T only (stricter).
- **Image level**: scenario 1 (50 % overlap) = some G_j is covered by a single region to at least
  ``image_overlap`` of G_j's area; scenario 2 (one pixel) = some region touches T's ground truth.

Intersections are computed only on ground-truth pixels (lesions are small), so a 1500x1152 image costs little more
than its connected-component labelling. :mod:`trainer.evaluate.protocol` applies these rules to every image and
threshold of a sweep, :mod:`trainer.evaluate.scored` to the region scores of the default FROC.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class GroundTruth:
    """The lesions G_j of one type in one image, stored sparsely.

    Attributes:
        index: flat pixel indices of all lesion pixels (int64).
        component: 1-based component id of each of those pixels (int32), same order.
        areas: pixel count of each component, ``areas[j - 1]`` for component j.
    """

    index: np.ndarray
    component: np.ndarray
    areas: np.ndarray

    @property
    def n_lesions(self) -> int:
        """Number of connected components."""
        return int(self.areas.size)

    @classmethod
    def from_mask(cls, mask: np.ndarray, connectivity: int = 8) -> GroundTruth:
        """Label a boolean ground-truth mask (H, W) into components."""
        n, labels = cv2.connectedComponents(np.asarray(mask, dtype=np.uint8), connectivity=connectivity,
                                            ltype=cv2.CV_32S)
        flat = labels.ravel()
        index = np.flatnonzero(flat)
        component = flat[index]
        areas = np.bincount(component, minlength=n)[1:].astype(np.int64)
        return cls(index, component, areas)


@dataclass(frozen=True)
class Match:
    """Counts for one image, one lesion type and one region set.

    Attributes:
        n_lesions: number of ground-truth components G_j.
        n_regions: number of regions P_i.
        detected: G_j detected under the paper's coverage rule.
        detected_any: G_j touched by at least one region.
        false_positives: regions whose mean IoU with the G_j they touch is below ``fp_iou``.
        false_positives_any: regions touching no G_j.
        image_hit_overlap: scenario 1 (some G_j covered to >= ``image_overlap`` by one region).
        image_hit_pixel: scenario 2 (some region touches the ground truth).
    """

    n_lesions: int
    n_regions: int
    detected: int
    detected_any: int
    false_positives: int
    false_positives_any: int
    image_hit_overlap: bool
    image_hit_pixel: bool


def match_regions(labels: np.ndarray, region_areas: np.ndarray, gt: GroundTruth, lesion_coverage: float = 0.5,
                  fp_iou: float = 0.5, image_overlap: float = 0.5, at_gt: np.ndarray | None = None) -> Match:
    """Apply the matching rules to one region label image.

    Args:
        labels: int (H, W) region labels, 0 = background, regions 1..n.
        region_areas: pixel count of each region, ``region_areas[i - 1]`` for label i (length n).
        gt: the lesions of one type in the same pixel grid.
        lesion_coverage, fp_iou, image_overlap: the rules' fractions (see the module docstring).
        at_gt: the region label at each of ``gt.index`` if already gathered (speed), else read from ``labels``.

    Returns:
        :class:`Match` with all counts.
    """
    n_p, n_g = int(region_areas.size), gt.n_lesions
    if n_g == 0:
        return Match(0, n_p, 0, 0, n_p, n_p, False, False)
    if n_p == 0:
        return Match(n_g, 0, 0, 0, 0, 0, False, False)
    coverage, touches, mean_iou = overlaps(labels, region_areas, gt, at_gt)
    best = coverage.max(axis=0)
    n_touched = touches.sum(axis=1)
    detected_any = int(touches.any(axis=0).sum())
    return Match(
        n_lesions=n_g, n_regions=n_p,
        detected=int((best >= lesion_coverage - 1e-12).sum()),
        detected_any=detected_any,
        false_positives=int((mean_iou < fp_iou).sum()),
        false_positives_any=int((n_touched == 0).sum()),
        image_hit_overlap=bool((best >= image_overlap - 1e-12).any()),
        image_hit_pixel=detected_any > 0,
    )


def overlaps(labels: np.ndarray, region_areas: np.ndarray, gt: GroundTruth,
             at_gt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Region-lesion overlap tables (needs at least one region and one lesion).

    Returns:
        ``coverage`` (regions, lesions): fraction of each lesion inside each region; ``touches`` (regions,
        lesions) bool: at least one common pixel; ``mean_iou`` (regions,): mean IoU with the lesions a region
        touches (0 when it touches none).
    """
    n_p, n_g = int(region_areas.size), gt.n_lesions
    at_gt = (labels.ravel()[gt.index] if at_gt is None else at_gt).astype(np.int64)
    inter = np.bincount(at_gt * (n_g + 1) + gt.component, minlength=(n_p + 1) * (n_g + 1))
    inter = inter.reshape(n_p + 1, n_g + 1)[1:, 1:].astype(np.float64)  # (regions, lesions)
    areas_g = gt.areas.astype(np.float64)
    touches = inter > 0
    union = region_areas.astype(np.float64)[:, None] + areas_g[None, :] - inter
    iou = np.where(touches, inter / union, 0.0)
    n_touched = touches.sum(axis=1)
    mean_iou = np.divide(iou.sum(axis=1), n_touched, out=np.zeros(n_p), where=n_touched > 0)
    return inter / areas_g[None, :], touches, mean_iou

"""One image's counts under the evaluation protocol, for every region threshold of a sweep at once (paper §4.3).

For each threshold, regions are proposed from the CAM on the photograph (``device.regions``) and matched against
each lesion type's ground truth with the rules of :mod:`trainer.evaluate.matching`; with the default score sweep
the regions at the operating threshold are also scored (:mod:`trainer.evaluate.scored`). One pass over an image
yields the whole FROC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.errors import ModelError
from device.regions import label_components
from trainer.evaluate.config import EvaluationConfig
from trainer.evaluate.matching import GroundTruth, match_regions
from trainer.evaluate.scored import ScoredImage, region_peaks, score_image

FIELDS = ("n_regions", "detected", "detected_any", "false_positives", "false_positives_any",
          "image_hit_overlap", "image_hit_pixel")


@dataclass(frozen=True)
class ImageCounts:
    """One image's counts over the whole threshold sweep.

    Attributes:
        image_id: e.g. ``"image001"``.
        prob: the classifier's referable probability.
        diseased: ground-truth class under the healthy definition.
        thresholds: the swept region thresholds, descending.
        n_lesions: ``{type: number of G_j}``.
        counts: ``{type: {field: int array (n_thresholds,)}}`` for each name in :data:`FIELDS`.
        scored: per-region scores for the score-sweep FROC (``froc_sweep="score"``), else None.
    """

    image_id: str
    prob: float
    diseased: bool
    thresholds: tuple[float, ...]
    n_lesions: dict[str, int]
    counts: dict[str, dict[str, np.ndarray]]
    scored: ScoredImage | None = None


def count_image(image_id: str, prob: float, heat: np.ndarray, lesion_masks: dict[str, np.ndarray], diseased: bool,
                config: EvaluationConfig, fov_mask: np.ndarray | None = None) -> ImageCounts:
    """Propose regions at every threshold of the sweep and match them against each lesion type.

    Args:
        image_id: the image's id.
        prob: referable probability from the classifier.
        heat: float (H, W) CAM on the photograph, in CAM units (not yet normalised).
        lesion_masks: ``{type: bool (H, W)}`` ground truth at the protocol's confidence.
        diseased: whether the image counts as diseased (healthy definition applied by the caller).
        config: the protocol.
        fov_mask: bool (H, W) field of view, used when ``config.restrict_to_fov``.

    Returns:
        :class:`ImageCounts`.
    """
    thresholds = config.thresholds()
    gts = {t: GroundTruth.from_mask(m, config.connectivity) for t, m in lesion_masks.items()}
    union = GroundTruth.from_mask(np.logical_or.reduce(list(lesion_masks.values())), config.connectivity)
    # each type's pixels as positions inside the union's sorted pixel list: one gather per threshold serves all
    where = {t: np.searchsorted(union.index, g.index) for t, g in gts.items()}
    counts = {t: {f: np.zeros(len(thresholds), np.int64) for f in FIELDS} for t in gts}
    scored = None
    if config.restrict_to_fov and fov_mask is not None:
        heat = np.where(fov_mask, heat, np.float32(0.0)).astype(np.float32)  # once, not once per threshold
    heat = np.asarray(heat, np.float32)
    if not np.all(np.isfinite(heat)):
        raise ModelError(f"The heat map of {image_id} contains NaN or infinite values; check the model and its input.")
    for k, threshold in enumerate(thresholds):
        labels, areas = label_components(heat, threshold, config.connectivity, config.normalisation,
                                         config.fixed_range)
        if config.min_region_area > 1 and areas.size and (areas < config.min_region_area).any():
            keep = np.flatnonzero(areas >= config.min_region_area) + 1
            remap = np.zeros(areas.size + 1, np.int32)
            remap[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
            labels, areas = remap[labels], areas[keep - 1]
        rules = (config.lesion_coverage, config.fp_iou, config.image_overlap)
        at_union = labels.ravel()[union.index]
        shared = match_regions(labels, areas, union, *rules, at_gt=at_union) if config.fp_scope == "all_types" else None
        for lesion_type, gt in gts.items():
            m = match_regions(labels, areas, gt, *rules, at_gt=at_union[where[lesion_type]])
            for f in FIELDS:
                counts[lesion_type][f][k] = int(getattr(m, f))
            if shared is not None:  # class-agnostic regions: FP only when they match no lesion of any type
                counts[lesion_type]["false_positives"][k] = shared.false_positives
                counts[lesion_type]["false_positives_any"][k] = shared.false_positives_any
        if config.froc_sweep == "score" and threshold == config.region_threshold:
            scored = score_image(labels, areas, region_peaks(heat, labels, int(areas.size)), gts, union,
                                 {t: at_union[where[t]] for t in gts}, at_union, config.lesion_coverage,
                                 config.fp_iou, config.fp_scope == "all_types")
    return ImageCounts(image_id, float(prob), bool(diseased), thresholds,
                       {t: g.n_lesions for t, g in gts.items()}, counts, scored)

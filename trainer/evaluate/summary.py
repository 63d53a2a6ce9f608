"""Turn per-image counts into the metrics of one image subset (the dictionary written to metrics.json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.evaluate.bootstrap import bootstrap_indices, ratio_ci, safe_ratio
from trainer.evaluate.classification import ClassificationResult, classification_metrics
from trainer.evaluate.config import EvaluationConfig
from trainer.evaluate.froc import FROCCurve, froc_bootstrap, froc_curve
from trainer.evaluate.protocol import ImageCounts
from trainer.evaluate.scored import score_matrices


def _stack(images: Sequence[ImageCounts], lesion_type: str, field: str) -> np.ndarray:
    return np.stack([im.counts[lesion_type][field] for im in images]).astype(np.int64)


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def lesion_metrics(images: Sequence[ImageCounts], lesion_type: str, referable: np.ndarray, op: int,
                   config: EvaluationConfig, idx: np.ndarray) -> tuple[dict[str, Any], FROCCurve, FROCCurve]:
    """Image-level and lesion-level metrics of one lesion type.

    Args:
        images: the subset's per-image counts.
        lesion_type: e.g. ``"haemorrhages"``.
        referable: (n,) bool, the classifier's decision per image.
        op: index of ``config.region_threshold`` in the sweep (the operating point).
        config: the protocol.
        idx: bootstrap indices.

    Returns:
        (metrics dict, FROC curve under the paper's rule, FROC curve under the any-pixel rule).
    """
    n_les = np.array([im.n_lesions[lesion_type] for im in images], np.int64)
    has = n_les > 0
    detected, detected_any = _stack(images, lesion_type, "detected"), _stack(images, lesion_type, "detected_any")
    fp, fp_any = _stack(images, lesion_type, "false_positives"), _stack(images, lesion_type, "false_positives_any")
    if config.froc_sweep == "score":  # the FROC ranks the operating point's regions by score
        curve_counts = score_matrices([im.scored for im in images], lesion_type)
    else:  # one FROC point per region threshold
        curve_counts = (detected, detected_any, fp, fp_any)
    hit50 = _stack(images, lesion_type, "image_hit_overlap")[:, op].astype(bool)
    hit1 = _stack(images, lesion_type, "image_hit_pixel")[:, op].astype(bool)
    gate = referable if config.gate_by_classifier else np.ones_like(referable)
    c_det, c_det_any, c_fp, c_fp_any = curve_counts
    paper, anypixel = froc_curve(c_det, c_fp, n_les), froc_curve(c_det_any, c_fp_any, n_les)
    rate, rates = config.report_fp_rate, config.froc_rates
    paper_ci, anypixel_ci = (froc_bootstrap(d, f, n_les, idx, rate, rates)
                             for d, f in ((c_det, c_fp), (c_det_any, c_fp_any)))
    n_images = max(1, len(images))
    out: dict[str, Any] = {
        "n_lesions": int(n_les.sum()),
        "n_images_with_lesion": int(has.sum()),
        "image_sensitivity_50": safe_ratio((hit50 & gate & has).sum(), has.sum()),
        "image_sensitivity_50_ci95": ratio_ci(hit50 & gate & has, has, idx),
        "image_sensitivity_1px": safe_ratio((hit1 & gate & has).sum(), has.sum()),
        "image_sensitivity_1px_ci95": ratio_ci(hit1 & gate & has, has, idx),
        "image_sensitivity_50_ungated": safe_ratio((hit50 & has).sum(), has.sum()),
        "image_sensitivity_1px_ungated": safe_ratio((hit1 & has).sum(), has.sum()),
        f"froc_sensitivity_at_{_rate_key(rate)}": paper.sensitivity_at(rate),
        f"froc_sensitivity_at_{_rate_key(rate)}_ci95": paper_ci[0],
        "froc_score": paper.score(rates),
        "froc_score_ci95": paper_ci[1],
        f"froc_anypixel_sensitivity_at_{_rate_key(rate)}": anypixel.sensitivity_at(rate),
        f"froc_anypixel_sensitivity_at_{_rate_key(rate)}_ci95": anypixel_ci[0],
        "froc_anypixel_score": anypixel.score(rates),
        "froc_anypixel_score_ci95": anypixel_ci[1],
        "froc_max_fp_per_image": float(paper.fp_per_image.max()),
        "operating_point": {
            "region_threshold": config.region_threshold,
            "sensitivity": safe_ratio(detected[:, op].sum(), n_les.sum()),
            "fp_per_image": float(fp[:, op].sum() / n_images),
            "sensitivity_anypixel": safe_ratio(detected_any[:, op].sum(), n_les.sum()),
            "fp_per_image_anypixel": float(fp_any[:, op].sum() / n_images),
        },
        "froc_curve": {"fp_per_image": paper.fp_per_image.round(5).tolist(),
                       "sensitivity": paper.sensitivity.round(5).tolist()},
        "froc_anypixel_curve": {"fp_per_image": anypixel.fp_per_image.round(5).tolist(),
                                "sensitivity": anypixel.sensitivity.round(5).tolist()},
    }
    return out, paper, anypixel


def subset_metrics(images: Sequence[ImageCounts], config: EvaluationConfig, decision_threshold: float,
                   lesion_types: Sequence[str]) -> tuple[dict[str, Any], ClassificationResult, dict[str, tuple]]:
    """All metrics of one image subset.

    Args:
        images: per-image counts of the subset (non-empty).
        config: the protocol.
        decision_threshold: referable when prob >= this.
        lesion_types: types to report, in order.

    Returns:
        (metrics dict, classification result with the ROC curve, ``{type: (paper FROC, any-pixel FROC)}``).
    """
    idx = bootstrap_indices(len(images), config.n_bootstrap, config.seed)
    probs = np.array([im.prob for im in images])
    diseased = np.array([im.diseased for im in images], bool)
    cls = classification_metrics(probs, diseased, decision_threshold, idx)
    referable = probs >= decision_threshold
    op = list(images[0].thresholds).index(config.region_threshold)
    n_regions = np.array([im.counts[lesion_types[0]]["n_regions"][op] for im in images])
    shown = (n_regions > 0) & (referable if config.gate_by_classifier else True)
    healthy = ~diseased
    metrics: dict[str, Any] = {
        "n_images": len(images), "n_diseased": cls.n_diseased, "n_healthy": cls.n_healthy,
        "auc": cls.auc, "auc_ci95": cls.auc_ci95,
        "sensitivity": cls.sensitivity, "sensitivity_ci95": cls.sensitivity_ci95,
        "specificity": cls.specificity, "specificity_ci95": cls.specificity_ci95,
        "decision_threshold": cls.threshold,
        "image_specificity": safe_ratio((healthy & ~shown).sum(), healthy.sum()),
        "image_specificity_ci95": ratio_ci(healthy & ~shown, healthy, idx),
        "regions_per_image": float(n_regions.mean()),
        "lesions": {},
    }
    curves = {}
    for lesion_type in lesion_types:
        metrics["lesions"][lesion_type], paper, anypixel = lesion_metrics(images, lesion_type, referable, op,
                                                                           config, idx)
        curves[lesion_type] = (paper, anypixel)
    return metrics, cls, curves

"""Parity of an exported TFLite model with its Keras original, measured through the unit's own runtime.

Both models see the same held-out images; the report gives the probability max abs difference, the AUC of each
and their difference, the Pearson correlation of the CAMs (median, worst) and the IoU of the region proposals
(``device.regions`` at the card's region threshold), plus verdict agreement at the decision threshold. The
export refuses a model outside the tolerances below unless forced; the report is written either way.

Usage::

    report = parity_report(keras_outputs, tflite_outputs, held_out, region_threshold=card.region_threshold,
                           decision_threshold=0.4)
    write_report(report, bundle_folder)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from device.atomic import write_atomic
from device.model.bundle import map_correlation
from device.regions import propose_regions

AUC_DIFF_MAX = 0.01  # issue 6: |AUC(TFLite) - AUC(Keras)| on the held-out set
CAM_CORR_MEDIAN_MIN = 0.98  # issue 6: median Pearson correlation of the CAMs
REPORT_JSON = "parity_report.json"
REPORT_MD = "parity_report.md"
REPORT_PNG = "parity_report.png"


def _region_iou(cam_a: np.ndarray, cam_b: np.ndarray, fov: np.ndarray, threshold: float, normalisation: str) -> float:
    size = fov.shape
    a = propose_regions(cam_a, size, threshold=threshold, normalisation=normalisation, mask=fov).union_mask()
    b = propose_regions(cam_b, size, threshold=threshold, normalisation=normalisation, mask=fov).union_mask()
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def _auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else None


def parity_report(keras_out: dict[str, np.ndarray], tflite_out: dict[str, np.ndarray], labels: np.ndarray,
                  fov_masks: np.ndarray, region_threshold: float, decision_threshold: float,
                  region_normalisation: str = "max") -> dict:
    """Compare Keras and TFLite outputs on the same images.

    Args:
        keras_out, tflite_out: ``{"probs": (N, 2), "cam": (N, h, w)}`` float arrays.
        labels: int (N,) 1 = referable (the AUCs need both classes; otherwise they are None).
        fov_masks: bool (N, S, S), regions are taken inside the FOV at model resolution.
        region_threshold: threshold on the normalised CAM (card value).
        decision_threshold: referable when prob >= this (card value).
        region_normalisation: ``device.regions`` normalisation mode.

    Returns:
        JSON-able dict of metrics (see the module docstring) with ``tolerances`` and ``passed``.
    """
    pk, pt = keras_out["probs"][:, 1], tflite_out["probs"][:, 1]
    corrs = np.array([map_correlation(a, b) for a, b in zip(keras_out["cam"], tflite_out["cam"])])
    ious = np.array([_region_iou(a, b, m, region_threshold, region_normalisation)
                     for a, b, m in zip(keras_out["cam"], tflite_out["cam"], fov_masks)])
    auc_keras, auc_tflite = _auc(labels, pk), _auc(labels, pt)
    auc_diff = None if auc_keras is None else abs(auc_tflite - auc_keras)
    report = {
        "n_images": int(len(pk)),
        "n_referable": int(np.sum(labels)),
        "prob_max_abs_diff": float(np.max(np.abs(pk - pt))),
        "prob_mean_abs_diff": float(np.mean(np.abs(pk - pt))),
        "auc_keras": auc_keras,
        "auc_tflite": auc_tflite,
        "auc_diff": auc_diff,
        "cam_corr_median": float(np.median(corrs)),
        "cam_corr_worst": float(np.min(corrs)),
        "region_iou_median": float(np.median(ious)),
        "region_iou_worst": float(np.min(ious)),
        "verdict_agreement": float(np.mean((pk >= decision_threshold) == (pt >= decision_threshold))),
        # images whose Keras probability is within the largest Keras-TFLite difference of the threshold: the
        # only ones whose verdict the measured difference can flip
        "verdict_near_threshold": int(np.sum(np.abs(pk - decision_threshold) <= np.max(np.abs(pk - pt)))),
        "tolerances": {"auc_diff_max": AUC_DIFF_MAX, "cam_corr_median_min": CAM_CORR_MEDIAN_MIN},
    }
    report["failures"] = parity_failures(report)
    report["passed"] = not report["failures"]
    return report


def parity_failures(report: dict) -> list[str]:
    """The tolerances a report misses, as short phrases (empty when it passes)."""
    failures = []
    if report["auc_diff"] is not None and report["auc_diff"] > AUC_DIFF_MAX:
        failures.append(f"AUC differs by {report['auc_diff']:.4f} (limit {AUC_DIFF_MAX})")
    if report["cam_corr_median"] < CAM_CORR_MEDIAN_MIN:
        failures.append(f"median CAM correlation is {report['cam_corr_median']:.4f} (limit {CAM_CORR_MEDIAN_MIN})")
    return failures


def _markdown(report: dict) -> str:
    def fmt(value) -> str:
        return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    rows = [("model", report.get("model_id")), ("format", report.get("format")),
            ("held-out images (referable)", f"{report['n_images']} ({report['n_referable']})"),
            ("held-out source", report.get("source"))]
    rows += [(key.replace("_", " "), fmt(report[key])) for key in (
        "prob_max_abs_diff", "prob_mean_abs_diff", "auc_keras", "auc_tflite", "auc_diff", "cam_corr_median",
        "cam_corr_worst", "region_iou_median", "region_iou_worst", "verdict_agreement")]
    verdict = "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"])
    lines = [f"# Parity report: TFLite ({report.get('format')}) vs Keras", "",
             f"Measured through `device.model.runtime` ({report.get('runtime')}). Tolerances: AUC difference <= "
             f"{AUC_DIFF_MAX}, median CAM correlation >= {CAM_CORR_MEDIAN_MIN}. Result: **{verdict}**.", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def _figure(keras_out: dict, tflite_out: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corrs = [map_correlation(a, b) for a, b in zip(keras_out["cam"], tflite_out["cam"])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
    left.scatter(keras_out["probs"][:, 1], tflite_out["probs"][:, 1], s=6)
    left.plot([0, 1], [0, 1], "k--", lw=0.8)
    left.set(xlabel="Keras P(referable)", ylabel="TFLite P(referable)", title="probability")
    right.hist(corrs, bins=30)
    right.set(xlabel="Pearson r (Keras vs TFLite CAM)", ylabel="images", title="CAM correlation")
    fig.tight_layout()
    fig.savefig(folder / REPORT_PNG, dpi=80)
    plt.close(fig)


def write_report(report: dict, folder: Path, keras_out: dict | None = None, tflite_out: dict | None = None) -> None:
    """Write ``parity_report.json`` and ``.md`` (atomically) and, given the outputs, a scatter/histogram PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / REPORT_JSON, (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(folder / REPORT_MD, _markdown(report).encode())
    if keras_out is not None and tflite_out is not None:
        _figure(keras_out, tflite_out, folder)

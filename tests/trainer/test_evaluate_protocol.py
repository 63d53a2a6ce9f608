"""Evaluator rules on plain arrays: oracle, all-zero and shifted CAMs with analytically known scores."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluate import EvaluationConfig, GroundTruth, count_image, match_regions, subset_metrics
from trainer.evaluate.froc import froc_curve

TYPES = ("haemorrhages", "hard_exudates", "soft_exudates", "red_small_dots")
CONFIG = EvaluationConfig(n_bootstrap=50)


def scene(seed: int) -> dict[str, np.ndarray]:
    """Lesions of each type as separated squares and discs in a 120x160 image (no two lesions touch)."""
    rng = np.random.default_rng(seed)
    masks = {t: np.zeros((120, 160), bool) for t in TYPES}
    slots = [(r, c) for r in range(5, 110, 26) for c in range(5, 150, 26)]
    for k in rng.permutation(len(slots))[: 3 + seed % 5]:
        r, c = slots[k]
        side = int(rng.integers(2, 18))
        masks[TYPES[int(rng.integers(0, 4))]][r:r + side, c:c + side] = True
    return masks


def run(cams_and_masks, probs=None, config=CONFIG):
    counts = []
    for i, (cam, masks) in enumerate(cams_and_masks):
        prob = 1.0 if probs is None else probs[i]
        diseased = any(m.any() for m in masks.values())
        counts.append(count_image(f"im{i}", prob, cam, masks, diseased, config))
    return subset_metrics(counts, config, 0.5, TYPES)[0]


def test_oracle_cam_scores_sensitivity_one_with_no_false_positives():
    data = []
    for seed in range(6):
        masks = scene(seed)
        data.append((np.logical_or.reduce(list(masks.values())).astype(np.float32), masks))
    metrics = run(data)
    for t in TYPES:
        lesion = metrics["lesions"][t]
        assert lesion["n_lesions"] > 0, t
        assert lesion["image_sensitivity_50"] == 1.0 and lesion["image_sensitivity_1px"] == 1.0
        assert lesion["froc_sensitivity_at_1.5"] == 1.0 and lesion["froc_score"] == 1.0
        assert lesion["froc_anypixel_score"] == 1.0
        assert lesion["operating_point"]["sensitivity"] == 1.0
        assert lesion["operating_point"]["fp_per_image"] == 0.0 and max(lesion["froc_curve"]["fp_per_image"]) == 0
    swept = run(data, config=EvaluationConfig(n_bootstrap=0, froc_sweep="region_threshold"))
    assert all(swept["lesions"][t]["froc_score"] == 1.0 for t in TYPES)
    # judged per type, the oracle's regions over the other types become false positives of this type
    strict = run(data, config=EvaluationConfig(n_bootstrap=0, fp_scope="per_type"))
    for t in TYPES:
        n_other = sum(strict["lesions"][u]["n_lesions"] for u in TYPES if u != t)
        assert strict["lesions"][t]["operating_point"]["fp_per_image"] == pytest.approx(n_other / len(data))
    # a per-type oracle has no false positives under either scope
    for t in TYPES:
        counts = [count_image("x", 1.0, m[t].astype(np.float32), {t: m[t]}, True, CONFIG) for _, m in data]
        assert all(c.counts[t]["false_positives"].sum() == 0 for c in counts)
        assert all(c.counts[t]["detected"][0] == c.n_lesions[t] for c in counts)


def test_all_zero_cam_scores_zero():
    data = [(np.zeros((120, 160), np.float32), scene(seed)) for seed in range(4)]
    metrics = run(data)
    for t in TYPES:
        lesion = metrics["lesions"][t]
        assert lesion["image_sensitivity_50"] == 0.0 and lesion["image_sensitivity_1px"] == 0.0
        assert lesion["froc_sensitivity_at_1.5"] == 0.0 and lesion["froc_score"] == 0.0
        assert lesion["operating_point"]["fp_per_image"] == 0.0
    assert metrics["regions_per_image"] == 0.0


@pytest.mark.parametrize("shift", [3, 6, 9, 12, 25])
def test_shifted_ground_truth_gets_the_analytic_partial_scores(shift):
    # squares of side s shifted by d along x: coverage (s-d)/s, IoU (s-d)/(s+d) (0 when d >= s)
    sides = (20, 40)
    gt = np.zeros((100, 200), bool)
    cam = np.zeros((100, 200), np.float32)
    for k, s in enumerate(sides):
        r, c = 10 + 45 * k, 20
        gt[r:r + s, c:c + s] = True
        cam[r:r + s, c + shift:c + shift + s] = 1.0
    coverage = [max(0, s - shift) / s for s in sides]
    iou = [max(0, s - shift) / (s + shift) for s in sides]
    want_detected = sum(c >= 0.5 for c in coverage)
    want_fp = sum(i < 0.5 for i in iou)
    want_fp_any = sum(c == 0 for c in coverage)
    config = EvaluationConfig(n_bootstrap=0, healthy_types=("haemorrhages",))
    counts = count_image("s", 1.0, cam, {"haemorrhages": gt}, True, config)
    c = counts.counts["haemorrhages"]
    assert set(c["detected"]) == {want_detected} and set(c["false_positives"]) == {want_fp}
    assert set(c["detected_any"]) == {2 - want_fp_any} and set(c["false_positives_any"]) == {want_fp_any}
    metrics = subset_metrics([counts], config, 0.5, ("haemorrhages",))[0]["lesions"]["haemorrhages"]
    assert metrics["image_sensitivity_50"] == float(want_detected > 0)
    assert metrics["image_sensitivity_1px"] == float(want_fp_any < 2)
    # one image, the same counts at every threshold: the FROC is the segment (0, 0) -> (fp, sens), flat after
    sens = want_detected / 2
    expected = [sens if want_fp == 0 else sens * min(1.0, r / want_fp) for r in CONFIG.froc_rates]
    assert metrics["froc_score"] == pytest.approx(np.mean(expected))
    assert metrics["froc_sensitivity_at_1.5"] == pytest.approx(sens if want_fp <= 1.5 else sens * 1.5 / want_fp)


def test_a_region_over_two_lesions_uses_their_mean_iou():
    gt_mask = np.zeros((10, 30), bool)
    gt_mask[2:6, 2:6] = True  # 16 px
    gt_mask[2:6, 10:14] = True  # 16 px
    labels = np.zeros((10, 30), np.int32)
    labels[2:6, 2:14] = 1  # 48 px region spanning both: IoU 16/48 each, mean 1/3 -> FP; both 100 % covered
    m = match_regions(labels, np.array([48]), GroundTruth.from_mask(gt_mask))
    assert (m.detected, m.false_positives, m.detected_any, m.false_positives_any) == (2, 1, 2, 0)
    assert m.image_hit_overlap and m.image_hit_pixel
    # a lower IoU rule accepts it
    assert match_regions(labels, np.array([48]), GroundTruth.from_mask(gt_mask), fp_iou=0.3).false_positives == 0


def test_image_hits_are_gated_by_the_classifier_and_specificity_counts_healthy_images():
    masks = scene(1)
    oracle = np.logical_or.reduce(list(masks.values())).astype(np.float32)
    healthy = {t: np.zeros_like(m) for t, m in masks.items()}
    noise = np.zeros((120, 160), np.float32)
    noise[50:60, 50:60] = 1.0
    data = [(oracle, masks), (noise, healthy), (noise, healthy)]
    # image 0 diseased but called non-referable; image 1 healthy and called referable (regions shown)
    metrics = run(data, probs=[0.2, 0.9, 0.1])
    first = next(t for t in TYPES if masks[t].any())
    assert metrics["lesions"][first]["image_sensitivity_50"] == 0.0
    assert metrics["lesions"][first]["image_sensitivity_50_ungated"] == 1.0
    assert metrics["image_specificity"] == 0.5
    assert (metrics["sensitivity"], metrics["specificity"]) == (0.0, 0.5)
    ungated = run(data, probs=[0.2, 0.9, 0.1], config=EvaluationConfig(n_bootstrap=0, gate_by_classifier=False))
    assert ungated["lesions"][first]["image_sensitivity_50"] == 1.0 and ungated["image_specificity"] == 0.0


def test_score_sweep_ranks_the_operating_point_regions_by_their_cam_maximum():
    gt = np.zeros((100, 100), bool)
    gt[10:20, 10:20] = True
    cam = np.zeros((100, 100), np.float32)
    cam[10:20, 10:20] = 0.7  # on the lesion, normalised 0.7 >= 0.65: a true positive with the lower score
    cam[60:70, 60:70] = 1.0  # elsewhere: a false positive with the top score
    config = EvaluationConfig(n_bootstrap=0, healthy_types=("haemorrhages",))
    counts = count_image("s", 1.0, cam, {"haemorrhages": gt}, True, config)
    assert counts.thresholds == (0.65,)
    assert list(counts.scored.region_scores) == pytest.approx([1.0, 0.7]) or \
        sorted(counts.scored.region_scores) == pytest.approx([0.7, 1.0])
    le = subset_metrics([counts], config, 0.5, ("haemorrhages",))[0]["lesions"]["haemorrhages"]
    # points: nothing (0, 0); score >= 1.0 -> (1 FP, 0 %); score >= 0.7 -> (1 FP, 100 %): envelope (0,0)-(1,1)
    assert le["froc_curve"] == {"fp_per_image": [0.0, 1.0], "sensitivity": [0.0, 1.0]}
    assert le["froc_sensitivity_at_1.5"] == 1.0
    assert le["froc_score"] == pytest.approx(np.mean([0.125, 0.25, 0.5, 1, 1, 1, 1]))
    assert le["operating_point"] == {"region_threshold": 0.65, "sensitivity": 1.0, "fp_per_image": 1.0,
                                     "sensitivity_anypixel": 1.0, "fp_per_image_anypixel": 1.0}


def test_region_threshold_sweep_lets_one_huge_region_cover_everything():
    # a smooth ramp peaking away from the lesions: at 0.65 the region misses them, but sweeping the
    # binarisation threshold down to 0.05 grows one region over the whole image that "detects" every lesion
    gt = np.zeros((100, 100), bool)
    gt[10:14, 10:14] = gt[80:84, 20:24] = True
    yy, xx = np.mgrid[0:100, 0:100]
    cam = (1.0 - np.hypot(yy - 50, xx - 90) / 150).astype(np.float32)
    base = dict(n_bootstrap=0, healthy_types=("haemorrhages",))
    by_score = subset_metrics([count_image("r", 1.0, cam, {"haemorrhages": gt}, True, EvaluationConfig(**base))],
                              EvaluationConfig(**base), 0.5, ("haemorrhages",))[0]["lesions"]["haemorrhages"]
    sweep = EvaluationConfig(**base, froc_sweep="region_threshold")
    by_threshold = subset_metrics([count_image("r", 1.0, cam, {"haemorrhages": gt}, True, sweep)], sweep, 0.5,
                                  ("haemorrhages",))[0]["lesions"]["haemorrhages"]
    assert by_score["froc_sensitivity_at_1.5"] == 0.0
    assert by_threshold["froc_sensitivity_at_1.5"] == 1.0  # the degenerate blob: why "score" is the default


def test_froc_curve_interpolates_from_the_origin_and_keeps_the_envelope():
    detected = np.array([[1, 2, 2, 3]])
    fp = np.array([[0, 1, 3, 4]])
    curve = froc_curve(detected, fp, np.array([4]))
    assert curve.sensitivity_at(0) == 0.25  # threshold point at 0 FP dominates the (0, 0) origin
    assert curve.sensitivity_at(0.5) == pytest.approx(0.375)
    assert curve.sensitivity_at(2) == 0.5 and curve.sensitivity_at(100) == 0.75
    assert froc_curve(detected, fp, np.array([0])).sensitivity_at(1) is None


def test_classification_auc_and_bootstrap_interval():
    masks_d, masks_h = scene(2), {t: np.zeros((120, 160), bool) for t in TYPES}
    zero = np.zeros((120, 160), np.float32)
    data = [(zero, masks_d)] * 5 + [(zero, masks_h)] * 5
    perfect = run(data, probs=[0.9, 0.8, 0.7, 0.6, 0.55, 0.1, 0.2, 0.3, 0.4, 0.45])
    assert perfect["auc"] == 1.0 and perfect["auc_ci95"] == pytest.approx([1.0, 1.0])
    assert perfect["sensitivity"] == 1.0 and perfect["specificity"] == 1.0
    mixed = run(data, probs=[0.9, 0.2, 0.7, 0.3, 0.55, 0.1, 0.8, 0.6, 0.4, 0.45])
    assert mixed["auc"] == pytest.approx(14 / 25)  # 14 of 25 diseased-healthy pairs ordered
    low, high = mixed["auc_ci95"]
    assert low < 0.56 < high and low >= 0.0 and high <= 1.0


def test_vectorised_bootstraps_equal_the_per_sample_definitions():
    from sklearn.metrics import roc_auc_score

    from trainer.evaluate.bootstrap import bootstrap_indices, percentile_ci
    from trainer.evaluate.classification import bootstrap_auc
    from trainer.evaluate.froc import froc_bootstrap

    rng = np.random.default_rng(1)
    probs, diseased = np.round(rng.random(40), 1), rng.random(40) < 0.5  # rounded: ties are averaged
    idx = bootstrap_indices(40, 200, seed=0)
    want = [roc_auc_score(diseased[s], probs[s]) for s in idx]
    assert np.allclose(bootstrap_auc(probs, diseased, idx), want)
    detected, fp = rng.integers(0, 5, (40, 8)), rng.integers(0, 5, (40, 8))
    n_lesions = detected.max(axis=1) + rng.integers(0, 3, 40)
    rates = CONFIG.froc_rates
    curves = [froc_curve(detected[s], fp[s], n_lesions[s]) for s in idx]
    at, score = froc_bootstrap(detected, fp, n_lesions, idx, 1.5, rates)
    assert at == pytest.approx(percentile_ci(np.array([c.sensitivity_at(1.5) for c in curves])))
    assert score == pytest.approx(percentile_ci(np.array([c.score(rates) for c in curves])))

"""The paper's headline numbers on DiaretDB1 (Gondal et al., ICIP 2017; DESIGN.md §2), for side-by-side reports."""

from __future__ import annotations

PAPER: dict = {
    "citation": "Gondal et al., Weakly-supervised localization of diabetic retinopathy lesions in retinal fundus "
                "images, ICIP 2017",
    "auc": 0.954,
    "sensitivity": 0.936,
    "specificity": 0.976,
    # lesion-level sensitivity at 1.5 false positives per image
    "froc_at_1.5": {"haemorrhages": 0.91, "hard_exudates": 0.87, "soft_exudates": 0.89, "red_small_dots": 0.52},
    # image-level lesion sensitivity, scenario 1 (50 % overlap) and scenario 2 (one pixel)
    "image_50": {"haemorrhages": 0.972, "hard_exudates": 0.933, "soft_exudates": 0.818, "red_small_dots": 0.50},
    "image_1px": {"haemorrhages": 0.972, "hard_exudates": 1.0, "soft_exudates": 0.909, "red_small_dots": 0.50},
}

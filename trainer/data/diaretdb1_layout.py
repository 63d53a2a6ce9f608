"""DiaretDB1 folder layout and ground-truth encoding, shared by the reader and the synthetic writer.

Facts checked on the real files (``../shared/data/diaretdb1``, DESIGN.md §3): the v1.1 fused maps are 8-bit grey
with values ``21 x (sum over 4 experts of Low 1 / Medium 2 / High 3)``, so 0..252 in steps of 21; 75 % confidence
means ``value >= 189`` (divide by 252, not 255). The ground-truth folder is spelled ``hemorrhages``.
"""

from __future__ import annotations

import math

# Canonical lesion-type names used project-wide (DESIGN.md §2.4), in this order.
LESION_TYPES: tuple[str, ...] = ("haemorrhages", "hard_exudates", "soft_exudates", "red_small_dots")

# v1.1 ground-truth sub-folders (real spelling, DESIGN.md §3).
GROUNDTRUTH_FOLDERS: dict[str, str] = {
    "haemorrhages": "hemorrhages",
    "hard_exudates": "hardexudates",
    "soft_exudates": "softexudates",
    "red_small_dots": "redsmalldots",
}

# v2.1 XML <markingtype> values for the four types; Disc, IRMA, Neovascularisation, Fundus_area are skipped.
XML_MARKING_TYPES: dict[str, str] = {
    "Haemorrhages": "haemorrhages",
    "Hard_exudates": "hard_exudates",
    "Soft_exudates": "soft_exudates",
    "Red_small_dots": "red_small_dots",
}

# Expert confidence levels (v2.1 XML) and the fused-map encoding (v1.1): value = 21 * sum of levels.
CONFIDENCE_LEVELS: dict[str, int] = {"Low": 1, "Medium": 2, "High": 3}
FUSED_STEP = 21
N_EXPERTS = 4
FUSED_MAX = FUSED_STEP * N_EXPERTS * 3  # 252
CONFIDENCE_75 = 0.75  # the paper's ground-truth threshold (Gondal et al. §4.3)

# Paths inside the v1.1 release folder ``diaretdb1_v_1_1/``.
V11_FOLDER = "diaretdb1_v_1_1"
V21_FOLDER = "ddb1_v02_01"
IMAGES_DIR = "resources/images/ddb1_fundusimages"
GROUNDTRUTH_DIR = "resources/images/ddb1_groundtruth"
FOV_MASK_PATH = "resources/images/ddb1_fundusmask/fmask.tif"
TRAINSET_PATH = "resources/traindatasets/trainset.txt"
TESTSET_PATH = "resources/testdatasets/testset.txt"
XML_DIR = "groundtruth"

# Real v1.1 frame (W x H) and its single field of view, measured on fmask.tif: circle centre (742.5, 575.5),
# radius 705 px, clipped to rows 6..1145 (1,407,235 pixels inside).
FRAME_WIDTH = 1500
FRAME_HEIGHT = 1152


def fused_threshold(confidence: float) -> int:
    """Smallest fused-map value that counts as lesion at ``confidence``.

    Args:
        confidence: mean expert confidence in [0, 1] (0.75 in the paper).

    Returns:
        ``ceil(confidence * 252)``, e.g. 189 for 0.75; at least 1 so that 0 never counts.
    """
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be within 0..1, got {confidence}")
    return max(1, math.ceil(confidence * FUSED_MAX - 1e-9))

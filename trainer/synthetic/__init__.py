"""Synthetic retina-like photographs with exact lesion masks, and writers for Kaggle- and DiaretDB1-layout folders.

Tests and the demo use these instead of licensed images (DESIGN.md §3: no licensed file is ever committed).
"""

from trainer.data.diaretdb1_layout import LESION_TYPES
from trainer.synthetic.fundus import SyntheticFundus, generate_fundus
from trainer.synthetic.lesions import Lesion, grade_from_lesions
from trainer.synthetic.writers import synthetic_diaretdb1_fundus, write_diaretdb1_folder, write_kaggle_folder

__all__ = [
    "LESION_TYPES",
    "Lesion",
    "SyntheticFundus",
    "generate_fundus",
    "grade_from_lesions",
    "synthetic_diaretdb1_fundus",
    "write_diaretdb1_folder",
    "write_kaggle_folder",
]

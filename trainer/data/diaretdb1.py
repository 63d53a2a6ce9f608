"""DiaretDB1 reader: images, fused expert maps -> per-type lesion masks, FOV mask and the official split.

Layout and encoding: see :mod:`trainer.data.diaretdb1_layout` (DESIGN.md §3). The v1.1 fused maps are the
reference ground truth; where a map file is missing, the map is rebuilt from the v2.1 expert XMLs
(:mod:`trainer.data.diaretdb1_xml`), which reproduce the shipped maps to a pixel-pooled IoU of 0.99+ per type.
A DiaretDB1-layout folder written by :func:`trainer.synthetic.write_diaretdb1_folder` loads through the same code.

Example:
    >>> db = load_diaretdb1("../shared/data/diaretdb1")
    >>> db.test_ids[:2], db.lesion_masks("image001")["hard_exudates"].sum()
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from trainer.data import diaretdb1_layout as layout
from trainer.data.diaretdb1_layout import CONFIDENCE_75, LESION_TYPES, fused_threshold
from trainer.data.diaretdb1_xml import rebuild_fused_maps
from trainer.data.eyepacs import DatasetError

__all__ = ["CONFIDENCE_75", "LESION_TYPES", "DiaretDB1", "load_diaretdb1"]

IMAGE_NAME = re.compile(r"^(image\d{3})\.png$")


def _read_split(path: Path, known: set[str]) -> list[str]:
    """Sorted image ids of a split list (one ``imageNNN.png`` per line; the real files are not sorted)."""
    if not path.is_file():
        raise DatasetError(f"The DiaretDB1 split list {path} is missing; restore it from the original release.")
    ids = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name = Path(line.strip()).name
        if not name:
            continue
        image_id = name.rsplit(".", 1)[0].replace("diaretdb1_", "")
        if image_id not in known:
            raise DatasetError(
                f"Line {number} of {path} names {name!r}, which is not among the DiaretDB1 images; fix the list.")
        ids.add(image_id)
    return sorted(ids)


@dataclass
class DiaretDB1:
    """A DiaretDB1 v1.1 tree (optionally with the v2.1 XMLs), read lazily image by image."""

    root: Path  # the diaretdb1_v_1_1 folder
    xml_dir: Path | None  # ddb1_v02_01/groundtruth, when present
    confidence: float
    image_ids: list[str]
    train_ids: list[str]
    test_ids: list[str]
    fov_mask: np.ndarray  # bool (H, W), shared by all images
    _has: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)

    @property
    def threshold(self) -> int:
        """Smallest fused-map value counted as lesion: ``ceil(confidence * 252)`` (189 at 0.75)."""
        return fused_threshold(self.confidence)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return self.fov_mask.shape  # type: ignore[return-value]

    def _check(self, image_id: str, lesion_type: str | None = None) -> None:
        if image_id not in self.image_ids:
            raise DatasetError(f"DiaretDB1 has no image {image_id!r}; use one of db.image_ids such as 'image001'.")
        if lesion_type is not None and lesion_type not in LESION_TYPES:
            raise DatasetError(f"Unknown lesion type {lesion_type!r}; use one of {', '.join(LESION_TYPES)}.")

    def image_path(self, image_id: str) -> Path:
        """Path of the photograph ``imageNNN.png``."""
        self._check(image_id)
        return self.root / layout.IMAGES_DIR / f"{image_id}.png"

    def image(self, image_id: str) -> np.ndarray:
        """The photograph as uint8 RGB (H, W, 3)."""
        path = self.image_path(image_id)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"The DiaretDB1 image {path} cannot be read; restore it from the original release.")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def fused_map(self, image_id: str, lesion_type: str) -> np.ndarray:
        """Raw fused expert map of one lesion type: uint8 (H, W), 0..252 = 21 x summed expert levels.

        Read from the v1.1 ground-truth PNG; rebuilt from the v2.1 XMLs when that file is missing.
        """
        self._check(image_id, lesion_type)
        path = self.root / layout.GROUNDTRUTH_DIR / layout.GROUNDTRUTH_FOLDERS[lesion_type] / f"{image_id}.png"
        if path.is_file():
            fused = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if fused is None or fused.shape[:2] != self.shape:
                raise DatasetError(
                    f"The ground-truth map {path} is unreadable or not {self.shape[1]}x{self.shape[0]}; restore it.")
            return fused if fused.ndim == 2 else fused[..., 0]
        if self.xml_dir is not None:
            return rebuild_fused_maps(self.xml_dir, image_id, self.shape)[lesion_type]
        raise DatasetError(f"The ground-truth map {path} is missing and no v2.1 XMLs were found; restore the map.")

    def rebuilt_fused_maps(self, image_id: str) -> dict[str, np.ndarray]:
        """All four fused maps of an image rebuilt from the v2.1 expert XMLs (the cross-check route)."""
        self._check(image_id)
        if self.xml_dir is None:
            raise DatasetError(
                f"No v2.1 expert XMLs (ddb1_v02_01/groundtruth) were found beside {self.root}; add them to rebuild "
                "maps.")
        return rebuild_fused_maps(self.xml_dir, image_id, self.shape)

    def lesion_masks(self, image_id: str) -> dict[str, np.ndarray]:
        """Per-type lesion masks at the confidence threshold: {lesion type: bool (H, W)}, ``value >= threshold``."""
        masks = {}
        for lesion_type in LESION_TYPES:
            masks[lesion_type] = self.fused_map(image_id, lesion_type) >= self.threshold
            self._has[(image_id, lesion_type)] = bool(masks[lesion_type].any())
        return masks

    def has_lesion(self, image_id: str, lesion_type: str) -> bool:
        """True when some pixel of ``lesion_type`` reaches the confidence threshold in this image."""
        key = (image_id, lesion_type)
        if key not in self._has:
            self._has[key] = bool((self.fused_map(image_id, lesion_type) >= self.threshold).any())
        return self._has[key]


def _find_v11(root: Path) -> Path:
    for candidate in (root / layout.V11_FOLDER, root):
        if (candidate / layout.IMAGES_DIR).is_dir():
            return candidate
    raise DatasetError(
        f"No DiaretDB1 v1.1 tree ({layout.V11_FOLDER}/{layout.IMAGES_DIR}) was found in {root}; "
        f"pass the folder that holds {layout.V11_FOLDER}/ or that folder itself.")


def load_diaretdb1(root: str | Path, confidence: float = CONFIDENCE_75) -> DiaretDB1:
    """Open a DiaretDB1 folder (real or synthetic).

    Args:
        root: the folder holding ``diaretdb1_v_1_1/`` (and optionally ``ddb1_v02_01/``), or the v1.1 folder itself.
        confidence: mean expert confidence a pixel needs to count as lesion (0.75 in the paper: value >= 189).

    Returns:
        A :class:`DiaretDB1` with sorted ``image_ids``, ``train_ids``, ``test_ids`` and the shared ``fov_mask``.

    Raises:
        DatasetError: the folder, the FOV mask or a split list is missing or malformed, or confidence is not in (0, 1].
    """
    if not 0.0 < confidence <= 1.0:
        raise DatasetError(f"The confidence threshold must be above 0 and at most 1, not {confidence}; pass e.g. 0.75.")
    root = Path(root)
    v11 = _find_v11(root)
    names = [IMAGE_NAME.match(p.name) for p in (v11 / layout.IMAGES_DIR).iterdir()]
    image_ids = sorted(m.group(1) for m in names if m)
    if not image_ids:
        raise DatasetError(f"The folder {v11 / layout.IMAGES_DIR} holds no imageNNN.png photographs; restore them.")
    fmask_path = v11 / layout.FOV_MASK_PATH
    try:
        fov_mask = np.array(Image.open(fmask_path)) > 0
    except (OSError, ValueError) as exc:
        raise DatasetError(f"The DiaretDB1 FOV mask {fmask_path} is missing or unreadable; restore it.") from exc
    if fov_mask.ndim != 2 or not fov_mask.any():
        raise DatasetError(
            f"The DiaretDB1 FOV mask {fmask_path} is not a single-channel mask with a field of view; restore it.")
    known = set(image_ids)
    train_ids = _read_split(v11 / layout.TRAINSET_PATH, known)
    test_ids = _read_split(v11 / layout.TESTSET_PATH, known)
    xml_dir = None
    for candidate in (v11.parent / layout.V21_FOLDER / layout.XML_DIR, root / layout.V21_FOLDER / layout.XML_DIR):
        if candidate.is_dir():
            xml_dir = candidate
            break
    return DiaretDB1(root=v11, xml_dir=xml_dir, confidence=confidence, image_ids=image_ids, train_ids=train_ids,
                     test_ids=test_ids, fov_mask=fov_mask)

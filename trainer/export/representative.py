"""Image sets used by the export: int8 calibration, the held-out parity/threshold set, and the self-test set.

Calibration and parity images come from the training data (a ``trainer prepare`` cache or the EyePACS folder,
through ``trainer.training.input_pipeline.load_images``, with the run's own patient-level split), standardised
exactly as the trainer and the unit do (:func:`device.preprocess.standardise`). Without training data, synthetic fundus
photographs (:mod:`trainer.synthetic`) stand in, and :attr:`ExportImages.source` says so, so the model card can
record it. The
self-test set is always synthetic: a bundle never contains licensed images.

Usage::

    data = trainer.training.input_pipeline.load_images(run_config.data, 256)
    calib = dataset_images(data, "train", size=256, limit=200)
    held_out = dataset_images(data, "val", size=256, limit=400)
    selftest = synthetic_images(4, size=256, seed=SELFTEST_SEED)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from device.preprocess import preprocess, standardise
from trainer.export.convert import ExportError

# Synthetic photographs are drawn at twice the model size (at least the 256 px that preprocess accepts), then
# preprocessed like a real photograph.
SYNTHETIC_MIN_PHOTO, SYNTHETIC_MAX_PHOTO = 256, 1024
SELFTEST_SEED = 20_171_017  # fixed: the bundle's self-test images are reproducible from the code
REFERABLE_FRACTION = 0.5  # synthetic held-out sets are balanced so an AUC can be computed


@dataclass(frozen=True)
class ExportImages:
    """Standardised model inputs with their labels.

    Attributes:
        images: float32 (N, S, S, 3), the model input.
        fov_masks: bool (N, S, S).
        labels: int (N,) 1 = referable.
        source: ``"training_data"`` (the run's cache or folder) or ``"synthetic"``.
        split: cache split the images came from (``"train"``, ``"val"``), None for synthetic.
    """

    images: np.ndarray
    fov_masks: np.ndarray
    labels: np.ndarray
    source: str
    split: str | None

    def __len__(self) -> int:
        return len(self.images)


def _resize(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if rgb.shape[0] == size:
        return rgb, mask
    interpolation = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
    small = cv2.resize(rgb, (size, size), interpolation=interpolation)
    small_mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    small[~small_mask] = 0
    return small, small_mask


def dataset_images(dataset, split: str, size: int, limit: int | None, normalisation: str = "per_image",
                   seed: int = 0, batch: int = 64) -> ExportImages:
    """Read, resize and standardise up to ``limit`` images of one split of the training data.

    Args:
        dataset: a ``trainer.training.input_pipeline.ImageSet`` (training cache or EyePACS folder, with the run's
            patient-level split), as returned by ``trainer.training.input_pipeline.load_images``.
        split: ``"train"`` (calibration) or ``"val"`` (threshold and parity).
        size: model input side in pixels (crops are resized when the data is at another size).
        limit: at most this many images, drawn at random with ``seed`` (None: the whole split).
        normalisation: the ``method`` of :func:`device.preprocess.standardise` the model was trained with.
        seed: sampling seed.
        batch: images read per call.

    Returns:
        :class:`ExportImages` with ``source="training_data"``.

    Raises:
        ExportError: the split is empty.
    """
    index = np.asarray(dataset.indices(split))
    if index.size == 0:
        raise ExportError(f"The training data {dataset.source} has no '{split}' images; give other data or "
                          "export with synthetic images.")
    if limit is not None and limit < index.size:
        index = np.sort(np.random.default_rng(seed).choice(index, size=limit, replace=False))
    images = np.empty((index.size, size, size, 3), np.float32)
    masks = np.empty((index.size, size, size), bool)
    for start in tqdm(range(0, index.size, batch), desc=f"{split} images", unit="batch", leave=False):
        rgb, fov = dataset.read(index[start:start + batch])
        for i, (crop, mask) in enumerate(zip(rgb, fov)):
            crop, mask = _resize(crop, mask, size)
            images[start + i] = standardise(crop, mask, normalisation)
            masks[start + i] = mask
    return ExportImages(images, masks, np.asarray(dataset.labels)[index].astype(np.int64), "training_data", split)


def synthetic_crops(n: int, size: int, seed: int,
                    referable_fraction: float = REFERABLE_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` synthetic fundus photographs and crop them to the FOV as the unit does.

    Args:
        n: number of images.
        size: model input side in pixels.
        seed: base seed (image ``i`` uses ``seed + i``), so the set is reproducible.
        referable_fraction: share of images drawn at a referable grade (2..4); the rest are grade 0..1.

    Returns:
        ``(rgb uint8 (n, S, S, 3), fov_mask bool (n, S, S), labels int (n,))``, labels from the generated grades.
    """
    from trainer.synthetic.fundus import generate_fundus

    photo_size = max(SYNTHETIC_MIN_PHOTO, min(2 * size, SYNTHETIC_MAX_PHOTO))
    rgb = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    labels = np.empty(n, np.int64)
    rng = np.random.default_rng(seed)
    for i in tqdm(range(n), desc="synthetic images", unit="img", leave=False, disable=n < 16):
        grade = int(rng.integers(2, 5)) if rng.random() < referable_fraction else int(rng.integers(0, 2))
        fundus = generate_fundus(seed=seed + i, size=photo_size, grade=grade)
        pre = preprocess(fundus.image, size=size, label=f"synthetic image {seed + i}")
        rgb[i], masks[i], labels[i] = pre.rgb, pre.fov_mask, int(fundus.referable)
    return rgb, masks, labels


def synthetic_images(n: int, size: int, seed: int, normalisation: str = "per_image",
                     referable_fraction: float = REFERABLE_FRACTION) -> ExportImages:
    """Synthetic stand-ins for training data: :func:`synthetic_crops`, standardised.

    Args:
        n, size, seed, referable_fraction: see :func:`synthetic_crops`.
        normalisation: standardisation method, see :func:`device.preprocess.standardise`.

    Returns:
        :class:`ExportImages` with ``source="synthetic"``.
    """
    rgb, masks, labels = synthetic_crops(n, size, seed, referable_fraction)
    return ExportImages(standardise(rgb, masks, normalisation), masks, labels, "synthetic", None)

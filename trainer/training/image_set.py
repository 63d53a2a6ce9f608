"""One labelled image set with its patient-level split: what every source reader returns and the pipeline batches.

Kept apart from :mod:`trainer.training.input_pipeline` so the source readers (:mod:`trainer.training.sources`) and the
pipeline can both use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device.preprocess import standardise

Reader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # indices -> (uint8 (n,S,S,3), bool (n,S,S))


@dataclass
class ImageSet:
    """Labelled crops of one dataset with their patient-level split.

    Attributes:
        ids, patients: str arrays (N,).
        levels: int arrays (N,) of grades 0-4; labels: 1 = referable, 0 = not.
        splits: str array (N,) of ``"train"``/``"val"``.
        read: indices -> (uint8 crops (n, S, S, 3), bool FOV masks (n, S, S)).
        size: crop side in pixels.
        source: human-readable origin (cache path or folder).
        skipped: ``(image id, reason)`` of images that could not be used.
        standardised: every image already standardised (float32 or float16 (N, S, S, 3)), or None; see
            :func:`trainer.training.input_pipeline.preload_standardised`.
        normalisation: the ``device.preprocess.standardise`` method of ``standardised``.
        fov: the field-of-view masks (bool (N, S, S)) kept with ``standardised`` (the augmentation needs them),
            or None.
    """

    ids: np.ndarray
    patients: np.ndarray
    levels: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    read: Reader
    size: int
    source: str
    skipped: list[tuple[str, str]]
    standardised: np.ndarray | None = None
    normalisation: str | None = None
    fov: np.ndarray | None = None

    def batch(self, idx: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
        """float32 (n, S, S, 3) model inputs and bool (n, S, S) FOV masks of images ``idx``: from the preloaded
        arrays when they were made with ``method``, else read and standardised now."""
        idx = np.asarray(idx)
        if self.standardised is not None and self.normalisation == method:
            return self.standardised[idx].astype(np.float32, copy=False), self.fov[idx]
        rgb, masks = self.read(idx)
        masks = np.asarray(masks)
        return standardise(np.asarray(rgb), masks, method), masks

    def standardised_batch(self, idx: np.ndarray, method: str) -> np.ndarray:
        """float32 (n, S, S, 3) model inputs of images ``idx`` (see :meth:`batch`)."""
        return self.batch(idx, method)[0]

    def indices(self, split: str) -> np.ndarray:
        """Positions of the images of one split."""
        return np.flatnonzero(self.splits == split)

    def summary(self) -> dict:
        """Counts per split (images, patients, referable) for the run folder."""
        out: dict = {"source": self.source, "size_px": self.size, "skipped": len(self.skipped),
                     "skipped_examples": [f"{i}: {r}" for i, r in self.skipped[:10]],
                     "preloaded": "off" if self.standardised is None else
                     f"{self.normalisation}, {self.standardised.dtype}"}
        for split in ("train", "val"):
            idx = self.indices(split)
            out[split] = {"images": int(idx.size), "patients": int(np.unique(self.patients[idx]).size),
                          "referable": int(self.labels[idx].sum()),
                          "levels": {str(k): int((self.levels[idx] == k).sum()) for k in range(5)}}
        return out

"""One labelled image set with its patient-level split: what every source reader returns and the pipeline batches.

Kept apart from :mod:`trainer.training.input_pipeline` so the source readers (:mod:`trainer.training.sources`) and the
pipeline can both use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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

    def indices(self, split: str) -> np.ndarray:
        """Positions of the images of one split."""
        return np.flatnonzero(self.splits == split)

    def summary(self) -> dict:
        """Counts per split (images, patients, referable) for the run folder."""
        out: dict = {"source": self.source, "size_px": self.size, "skipped": len(self.skipped),
                     "skipped_examples": [f"{i}: {r}" for i, r in self.skipped[:10]]}
        for split in ("train", "val"):
            idx = self.indices(split)
            out[split] = {"images": int(idx.size), "patients": int(np.unique(self.patients[idx]).size),
                          "referable": int(self.labels[idx].sum()),
                          "levels": {str(k): int((self.levels[idx] == k).sum()) for k in range(5)}}
        return out

"""Input pipeline: labelled crops from a training cache or an image folder -> standardised, class-weighted batches.

Backend-neutral (numpy + OpenCV in background threads through ``keras.utils.PyDataset``), so the same code feeds
TensorFlow and JAX. What makes it keep up with an accelerator:

- ``data.workers = "auto"``: one thread per usable CPU core loads the images and makes batches ahead of the step
  (``PyDataset`` workers; OpenCV, zlib and numpy copies release the GIL); up to ``PREFETCH_BYTES`` of finished
  batches wait in the queue; training reads one endless stream (``BatchSequence(endless=True)``), so the queue
  carries on across epoch ends instead of being stopped and refilled every epoch.
- ``data.preload``: every image is standardised once when the data is loaded (:func:`preload_standardised`), so
  a batch is a gather from memory instead of ``standardise`` per image and epoch (local contrast costs a 2-D
  Gaussian blur per image).
- augmentation runs where it is cheaper (:mod:`trainer.training.augment`): on the accelerator in the step, or on
  CPU-only machines with OpenCV in these threads.

The shuffle order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the batches the killed run
would have.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import keras
import numpy as np

from device.errors import ConfigError, ImageError
from device.imageio import load_image
from device.preprocess import preprocess
from trainer.training.augment import augment_batch
from trainer.training.config import DataConfig
from trainer.training.image_set import ImageSet, Reader

__all__ = ["BatchSequence", "ImageSet", "Reader", "class_weights", "load_cache", "load_folder", "load_images",
           "preload_standardised"]

PREFETCH_BYTES = 1 << 30  # finished float32 batches queued ahead of the step, at most (and at least 2 batches)
PRELOAD_CHUNK = 32  # images standardised per task when preloading


def _preprocess_one(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    pre = preprocess(load_image(path), size=size, label=path.name)
    return pre.rgb, pre.fov_mask


def load_folder(cfg: DataConfig, size: int, workers: int = 2) -> ImageSet:
    """Read an EyePACS-style folder, crop every photograph to its FOV at ``size`` px and keep it in memory.

    Unreadable or non-fundus images are skipped and listed (DESIGN.md §2.2: never crash on them).
    """
    from trainer.data.eyepacs import EyePACSDataset, split_by_patient

    dataset = EyePACSDataset.read(cfg.path)
    images = list(dataset.images)
    if cfg.max_images:
        images = images[: cfg.max_images]
    split = split_by_patient(images, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    rgb = np.zeros((len(images), size, size, 3), np.uint8)
    masks = np.zeros((len(images), size, size), bool)
    keep, skipped = [], []

    def work(i: int):
        try:
            rgb[i], masks[i] = _preprocess_one(images[i].path, size)
            return None
        except ImageError as err:
            return str(err)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, err in enumerate(pool.map(work, range(len(images)))):
            (skipped.append((images[i].image_id, err)) if err else keep.append(i))
    keep = np.asarray(keep, int)
    rgb, masks = rgb[keep], masks[keep]
    kept = [images[i] for i in keep]
    return ImageSet(
        ids=np.array([im.image_id for im in kept]), patients=np.array([im.patient for im in kept]),
        levels=np.array([im.level for im in kept], int), labels=np.array([im.label for im in kept], int),
        splits=np.array([split[im.image_id] for im in kept]), read=lambda idx: (rgb[idx], masks[idx]),
        size=size, source=str(Path(cfg.path)), skipped=skipped,
    )


def load_cache(cfg: DataConfig, size: int) -> ImageSet:
    """Open a training cache built by ``python -m trainer prepare`` (its own split and crop size)."""
    from trainer.data.cache import TrainingCache

    cache = TrainingCache.open(cfg.path)
    if cache.size != size:
        raise ConfigError(f"The cache {cfg.path} holds {cache.size} px crops but input_size is {size}; "
                          f"set input_size = {cache.size} or prepare a {size} px cache.")
    train, val = cache.records("train"), cache.records("val")
    if cfg.max_images:  # keep the cache's train/val proportion
        n_val = max(1, round(cfg.max_images * len(val) / max(1, len(train) + len(val))))
        train, val = train[: cfg.max_images - n_val], val[:n_val]
    records = train + val
    ids = np.array([r.image_id for r in records])

    threads = cfg.worker_threads()

    def read(idx: np.ndarray):
        return cache.read_many([str(i) for i in ids[np.asarray(idx)]], workers=threads if threads > 1 else 0)

    return ImageSet(
        ids=ids, patients=np.array([r.patient for r in records]), levels=np.array([r.level for r in records], int),
        labels=np.array([r.label for r in records], int), splits=np.array([r.split for r in records]),
        read=read, size=size, source=str(Path(cfg.path)),
        skipped=[(d["image_id"], d["reason"]) for d in cache.summary().get("skipped_images", [])],
    )


def load_images(cfg: DataConfig, size: int, preload: bool = False) -> ImageSet:
    """The dataset a config names; with ``preload``, standardised once in memory as ``cfg.preload`` says.

    Args:
        cfg: the data config.
        size: crop side in pixels.
        preload: True = apply ``cfg.preload`` (training, validation); False = never (the images are standardised
            per batch, e.g. for the few an export calibrates on).

    Raises:
        ConfigError: a split is empty, or the folder, cache or sources cannot be used.
    """
    threads = cfg.worker_threads()
    if cfg.source == "mixed":
        from trainer.training.sources import load_mixed

        images = load_mixed(cfg, size, workers=threads)
    else:
        images = load_cache(cfg, size) if cfg.source == "cache" else load_folder(cfg, size, workers=threads)
    for split in ("train", "val"):
        if images.indices(split).size == 0:
            raise ConfigError(f"The {split} split of {images.source} is empty; use more images or change "
                              "data.val_fraction.")
    dtype = preload_dtype(cfg.preload, len(images.ids), size) if preload else None
    if dtype is not None:
        images = preload_standardised(images, cfg.normalisation, dtype, threads)
    return images


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), or None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def preload_dtype(mode: str, n_images: int, size: int, available: int | None = None) -> np.dtype | None:
    """The dtype ``data.preload`` asks for with ``n_images`` crops of ``size`` px, or None (standardise per batch).

    ``auto``: float32 when the array takes at most half of ``available`` memory (default: what the system reports
    now), else float16 when that does, else None; float32 when the memory is unknown.
    """
    if mode == "off":
        return None
    if mode in ("float32", "float16"):
        return np.dtype(mode)
    need = n_images * size * size * 3 * 4
    available = available_memory() if available is None else available
    if available is None or need <= available / 2:
        return np.dtype("float32")
    return np.dtype("float16") if need / 2 <= available / 2 else None


def preload_standardised(images: ImageSet, normalisation: str, dtype: np.dtype | str = "float32",
                         workers: int = 1) -> ImageSet:
    """A copy of ``images`` whose batches come from every image standardised once (normalise once, not per batch).

    Args:
        images: the dataset (its ``read`` is called once per image).
        normalisation: the ``device.preprocess.standardise`` method.
        dtype: float32, or float16 (half the memory; about 1e-3 relative rounding of the standardised values).
        workers: threads (``standardise`` and the readers are OpenCV/zlib/numpy, which release the GIL).

    Returns:
        The same :class:`ImageSet` (or subclass) with ``standardised`` and ``normalisation`` set.
    """
    from device.preprocess import standardise

    n = len(images.ids)
    out = np.empty((n, images.size, images.size, 3), np.dtype(dtype))
    fov = np.empty((n, images.size, images.size), bool)

    def work(start: int) -> None:
        idx = np.arange(start, min(n, start + PRELOAD_CHUNK))
        rgb, masks = images.read(idx)
        fov[idx] = masks
        out[idx] = standardise(np.asarray(rgb), np.asarray(masks), normalisation)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(work, range(0, n, PRELOAD_CHUNK)))
    return dataclasses.replace(images, standardised=out, normalisation=normalisation, fov=fov)


def class_weights(labels: np.ndarray, mode: str) -> np.ndarray:
    """Per-class loss weights: ``N / (2 N_c)`` for ``balanced`` (mean weight 1), ones for ``none``."""
    if mode == "none":
        return np.ones(2, np.float32)
    counts = np.bincount(labels.astype(int), minlength=2).astype(np.float64)
    return (labels.size / (2.0 * np.maximum(counts, 1.0))).astype(np.float32)


class BatchSequence(keras.utils.PyDataset):
    """Batches of (standardised images, labels, sample weights) for ``fit``, or images only for ``predict``.

    Args:
        images: the dataset.
        indices: the positions to serve (a split).
        batch_size: images per batch; training drops the last incomplete batch (fixed shapes, one compile).
        normalisation: ``device.preprocess.standardise`` method.
        weights: per-class loss weights, or None for an evaluation sequence (no labels returned).
        shuffle_seed: None = fixed order; otherwise epoch ``e`` uses permutation ``rng(seed, e)``.
        workers: background threads (0 or 1 = in the training loop); finished batches are queued ahead, up to
            2 per thread and ``PREFETCH_BYTES`` in all.
        first_epoch: epoch whose shuffle order is served first (a resumed run starts where it stopped).
        hflip: serve the images flipped left-right (flip test-time augmentation).
        augment: keyword arguments of :func:`trainer.training.augment.augment_batch` to augment in the pipeline, or
            None.
        endless: training only: one endless stream, batch ``i`` = batch ``i % len`` of epoch ``first_epoch + i //
            len`` (the same batches as epoch by epoch); fit it with ``steps_per_epoch = len(seq)``. Keras then keeps
            one iterator and its worker queue for the whole run, so the next epoch's first batches are made while
            the current epoch ends (validation, checkpoint) instead of after it.
    """

    def __init__(self, images: ImageSet, indices: np.ndarray, batch_size: int, normalisation: str = "per_image",
                 weights: np.ndarray | None = None, shuffle_seed: int | None = None, workers: int = 0,
                 first_epoch: int = 0, hflip: bool = False, augment: dict | None = None, endless: bool = False):
        batch_bytes = batch_size * images.size * images.size * 3 * 4
        queue = max(2, min(2 * workers, PREFETCH_BYTES // max(1, batch_bytes)))
        super().__init__(workers=max(1, workers), use_multiprocessing=False, max_queue_size=queue)
        if augment is not None:
            # The pipeline's threads already work on batches side by side: OpenCV's own threads in each warpAffine
            # only add CPU (measured at 512 px, batch 8: 29-30 ms of CPU per batch with 2 OpenCV threads against
            # 15-22 ms with 1, the same wall time), taken from the training step on a machine whose cores it uses.
            cv2.setNumThreads(1)
        self.images, self.indices, self.batch_size = images, np.asarray(indices), batch_size
        self.normalisation, self.weights, self.shuffle_seed = normalisation, weights, shuffle_seed
        self.epoch, self.hflip, self.augment = first_epoch, hflip, augment
        self.endless = bool(endless and weights is not None)
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._order = self._permutation()

    @property
    def num_batches(self) -> int | None:
        """Batches per pass for Keras: None (endless) in ``endless`` mode."""
        return None if self.endless else len(self)

    def _permutation(self, epoch: int | None = None) -> np.ndarray:
        if self.shuffle_seed is None:
            return self.indices
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng([self.shuffle_seed, epoch]).permutation(self.indices)

    def _order_of(self, epoch: int) -> np.ndarray:
        with self._lock:  # worker threads near an epoch boundary ask for two epochs at once
            order = self._orders.get(epoch)
            if order is None:
                order = self._orders[epoch] = self._permutation(epoch)
                for old in [e for e in self._orders if e < epoch - 1]:
                    del self._orders[old]
            return order

    def set_epoch(self, epoch: int) -> None:
        """Serve the shuffle order of ``epoch`` (used when a run resumes; in ``endless`` mode, batch 0's epoch)."""
        self.epoch = epoch
        self._order = self._permutation()

    def __len__(self) -> int:
        n = len(self.indices)
        return max(1, n // self.batch_size if self.weights is not None else math.ceil(n / self.batch_size))

    def __getitem__(self, batch: int):
        epoch, order = self.epoch, self._order
        if self.endless:
            epoch, batch = self.epoch + batch // len(self), batch % len(self)
            order = self._order_of(epoch)
        idx = order[batch * self.batch_size : (batch + 1) * self.batch_size]
        x, fov = self.images.batch(idx, self.normalisation)
        if self.hflip:
            x = np.ascontiguousarray(x[:, :, ::-1])
        if self.weights is None:
            return (x,)
        if self.augment is not None:  # seeded by (seed, epoch, batch): the same after a resume
            rng = np.random.default_rng([self.shuffle_seed or 0, epoch, batch])
            x = augment_batch(x, rng, **self.augment, fov=fov)
        y = self.images.labels[idx].astype(np.int32)
        return x, y, self.weights[y]

    def on_epoch_end(self) -> None:
        if not self.endless:  # endless: the batch index carries the epoch
            self.set_epoch(self.epoch + 1)

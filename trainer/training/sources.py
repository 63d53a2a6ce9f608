"""A mixed training set: several labelled folders (cameras, resolutions), each split by patient on its own.

``data.source = "mixed"`` with ``data.sources = [{name, path, images?, labels?, manifest?}, ...]``: every folder is
read like an EyePACS folder, split train/validation by patient with the run's ``val_fraction`` and ``split_seed``
(so each source keeps its own validation share and a source's split does not depend on the others), cropped to the
FOV at the input size and kept in memory. The run folder's ``data.json`` records each source's path, counts and the
sha256 of its label file; a ``manifest`` (``sha256sum`` format) makes every image used be checked against it first.

Usage::

    images = load_mixed(cfg.data, 256)        # a MixedImageSet; images.source_names[i] names image i's source
    per_source = images.summary()["sources"]  # {name: {path, labels_sha256, train: {...}, val: {...}}}
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.errors import ConfigError, ImageError
from device.imageio import load_image
from device.preprocess import preprocess
from trainer.training.config import DataConfig, SourceConfig
from trainer.training.image_set import ImageSet


@dataclass
class MixedImageSet(ImageSet):
    """An :class:`ImageSet` whose images come from several sources.

    Attributes:
        source_names: str array (N,), the source of each image.
        source_info: per source: path, label file and its sha256, manifest, images skipped.
    """

    source_names: np.ndarray = field(default_factory=lambda: np.array([], str))
    source_info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        out = super().summary()
        out["sources"] = {}
        for name, info in self.source_info.items():
            entry = dict(info)
            for split in ("train", "val"):
                idx = np.flatnonzero((self.source_names == name) & (self.splits == split))
                entry[split] = {"images": int(idx.size), "patients": int(np.unique(self.patients[idx]).size),
                                "referable": int(self.labels[idx].sum())}
            out["sources"][name] = entry
        return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, str]:
    """``sha256sum`` lines (``<hex>  <relative path>``) as file name -> hash."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"Cannot read the manifest {path} ({err.strerror}); check data.sources.") from None
    out = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ConfigError(f"Line {number} of the manifest {path} is not '<sha256>  <file>'; fix the manifest.")
        out[Path(parts[1].strip().lstrip("*")).name] = parts[0].lower()
    return out


def _resolve(root: Path, value: str | None) -> Path | None:
    """Like the EyePACS reader: absolute as given; relative under ``root`` when it exists there, else to the cwd."""
    if value is None:
        return None
    p = Path(value)
    return p if p.is_absolute() or not (root / p).exists() else root / p


def _read_source(src: SourceConfig, cfg: DataConfig, size: int, workers: int):
    from trainer.data.eyepacs import FLAT_LABELS, EyePACSDataset, split_by_patient

    root = Path(src.path)
    dataset = EyePACSDataset.read(root, labels=src.labels, images_dir=src.images)
    images = list(dataset.images)
    if src.max_images:
        images = images[: src.max_images]
    if not images:
        raise ConfigError(f"The source '{src.name}' ({root}) has no labelled images; check data.sources.")
    labels_file = dataset.label_files[0] if dataset.label_files else _resolve(root, src.labels or FLAT_LABELS)
    if src.manifest is not None:
        manifest_path = _resolve(root, src.manifest)
        hashes = read_manifest(manifest_path)
        for image in images:
            expected = hashes.get(image.path.name)
            if expected is None:
                raise ConfigError(f"{image.path.name} of source '{src.name}' is not in its manifest {manifest_path}; "
                                  "use only the listed images.")
            if sha256_file(image.path) != expected:
                raise ConfigError(f"{image.path} does not match its sha256 in {manifest_path}; extract it again.")
    split = split_by_patient(images, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    rgb = np.zeros((len(images), size, size, 3), np.uint8)
    masks = np.zeros((len(images), size, size), bool)

    def work(i: int):
        try:
            pre = preprocess(load_image(images[i].path), size=size, label=images[i].path.name)
            rgb[i], masks[i] = pre.rgb, pre.fov_mask
            return None
        except ImageError as err:
            return str(err)

    keep, skipped = [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, err in enumerate(pool.map(work, range(len(images)))):
            (skipped.append((images[i].image_id, err)) if err else keep.append(i))
    info = {"path": str(root), "images_folder": str(_resolve(root, src.images) or root),
            "labels": str(labels_file), "labels_sha256": sha256_file(labels_file) if labels_file else None,
            "manifest_checked": src.manifest is not None, "listed": len(images), "skipped": len(skipped)}
    kept = [images[i] for i in keep]
    return kept, split, rgb[keep], masks[keep], skipped, info


def load_mixed(cfg: DataConfig, size: int, workers: int = 2) -> MixedImageSet:
    """Read every source of ``cfg.sources`` into one in-memory set (see the module docstring).

    Raises:
        ConfigError: a folder, label file or manifest is missing, a hash differs, or a source has no images.
    """
    parts = [(src, *_read_source(src, cfg, size, workers)) for src in cfg.sources]
    ids, patients, levels, labels, splits, names = [], [], [], [], [], []
    skipped, info = [], {}
    for src, kept, split, _, _, skip, src_info in parts:
        ids += [im.image_id for im in kept]
        patients += [f"{src.name}/{im.patient}" for im in kept]
        levels += [im.level for im in kept]
        labels += [im.label for im in kept]
        splits += [split[im.image_id] for im in kept]
        names += [src.name] * len(kept)
        skipped += [(f"{src.name}/{i}", r) for i, r in skip]
        info[src.name] = src_info
    if len(set(ids)) != len(ids):
        raise ConfigError("Two sources of data.sources share image names; give each folder once.")
    rgb = np.concatenate([p[3] for p in parts])
    masks = np.concatenate([p[4] for p in parts])
    return MixedImageSet(
        ids=np.array(ids), patients=np.array(patients), levels=np.array(levels, int), labels=np.array(labels, int),
        splits=np.array(splits), read=lambda idx: (rgb[idx], masks[idx]), size=size,
        source="mixed: " + " + ".join(f"{n} ({len(p[1])})" for n, p in zip(info, parts)), skipped=skipped,
        source_names=np.array(names), source_info=info,
    )


def auc_with_ci(labels: np.ndarray, probs: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """AUC with its bootstrap 95 % interval over images (None where one class is absent)."""
    from trainer.evaluate.bootstrap import bootstrap_indices, percentile_ci
    from trainer.evaluate.classification import bootstrap_auc

    labels, probs = np.asarray(labels).astype(bool), np.asarray(probs, np.float64)
    n_pos = int(labels.sum())
    out = {"images": int(labels.size), "referable": n_pos, "auc": None, "auc_ci95": None}
    if 0 < n_pos < labels.size:
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(labels, probs))
        out["auc_ci95"] = percentile_ci(bootstrap_auc(probs, labels, bootstrap_indices(labels.size, n_boot, seed)))
    return out


def per_source_auc(labels: np.ndarray, probs: np.ndarray, names: np.ndarray | None, n_boot: int = 2000,
                   seed: int = 0) -> dict:
    """``{source: auc_with_ci(...)}`` for every source name present (empty when ``names`` is None)."""
    if names is None:
        return {}
    return {str(n): auc_with_ci(labels[names == n], probs[names == n], n_boot, seed) for n in np.unique(names)}

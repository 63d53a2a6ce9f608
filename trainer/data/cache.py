"""The training cache written by ``python -m trainer prepare`` and read by the training input pipeline.

Layout of a cache folder::

    manifest.json        written last, atomically: settings, records, skipped images, source hashes
    skipped.csv          the images that could not be used, with the reason (one sentence each)
    journal.jsonl        one line per finished image while ``prepare`` runs (makes it resumable)
    state.json           preprocessing version, size and codec of the files below
    shards/<xx>/<image_id>.drc

Each ``.drc`` file holds one preprocessed image: an 8-byte header (magic ``DRC1``, size as two uint16) and one
zlib stream (level 1) of the uint8 RGB crop followed by the bit-packed FOV mask. The crop is stored, not the
standardised floats: the pipeline applies ``device.preprocess.standardise``. Why this codec (measured with
``bench/bench_prepare.py`` on 512 px crops of the real Kaggle photographs, images per CPU-second): raw bytes
800 KiB per image; zlib level 1 about 445 KiB and about 330 images/s to decode (level 6: same speed, slower to
write); PNG (RGB, level 1) about 330 KiB and about 210 images/s; lossless WebP smaller but about 10x slower to
write. zlib-1 is the fastest lossless decoder at about half the raw size, its Adler-32 checksum catches damaged
files, and ``zlib`` releases the GIL, so ``read_many`` scales with threads. The goal (issue 3, DESIGN.md §5) is
>= 1,000 images/s on 16 cores, i.e. >= 62.5 images/s per core.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.atomic import sha256_file
from trainer.data.eyepacs import DatasetError

CACHE_FORMAT = "dr-cam-training-cache/1"
CODEC = "zlib1-rgb-packbits"
MAGIC = b"DRC1"
HEADER = struct.Struct("<4sHH")  # magic, height, width
ZLIB_LEVEL = 1  # fastest decode per byte saved, see the module docstring
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
STATE = "state.json"
SKIPPED_CSV = "skipped.csv"
SHARDS = "shards"
FILE_SUFFIX = ".drc"
PREPROCESS_MODULE = "device.preprocess"
PREPARE_HINT = "re-run `python -m trainer prepare` with the same arguments"


class CacheError(DatasetError):
    """A training cache is missing, incomplete, stale or damaged."""


@dataclass(frozen=True)
class CacheRecord:
    """One cached image: id, patient, Kaggle grade, binary label (referable = 1) and split."""

    image_id: str
    patient: str
    level: int
    label: int
    split: str


def preprocess_version() -> str:
    """The version of the shared preprocessing: ``PREPROCESS_VERSION`` plus a hash of the code that implements it.

    ``device.preprocess.PREPROCESS_VERSION`` names deliberate changes; the hash of the source of
    ``device.preprocess`` and every ``device`` module it imports (recursively: ``fov``, ``imageio``, ...) catches
    the changes nobody bumped the constant for. A cache is never used with preprocessing that may differ from
    the unit's; the price is a rebuild after a mere comment edit in those few files.

    Returns:
        ``"<PREPROCESS_VERSION>+<12 hex digits>"``; a cache made with another version is stale.
    """
    import device.preprocess as preprocess_module

    digest = hashlib.sha256()
    for name in sorted(_device_imports(PREPROCESS_MODULE)):
        digest.update(name.encode() + b"\0" + _module_path(name).read_bytes() + b"\0")
    return f"{getattr(preprocess_module, 'PREPROCESS_VERSION', 'unversioned')}+{digest.hexdigest()[:12]}"


def _module_path(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise CacheError(f"The preprocessing module {name} cannot be found; reinstall the project.")
    return Path(spec.origin)


def _device_imports(name: str, seen: set[str] | None = None) -> set[str]:
    """``name`` and the ``device`` modules it imports, recursively (read from the source, nothing imported)."""
    seen = set() if seen is None else seen
    seen.add(name)
    for node in ast.walk(ast.parse(_module_path(name).read_bytes())):
        targets = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for target in targets:
            if target.startswith("device.") and target not in seen and _is_module(target):
                _device_imports(target, seen)
    return seen


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module (``from device.errors import X`` also yields ``device.errors.X``)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):
        return False


def shard_path(image_id: str) -> str:
    """Relative path of an image's cache file (256 sub-folders keep directories small)."""
    shard = hashlib.md5(image_id.encode("utf-8")).hexdigest()[:2]
    return f"{SHARDS}/{shard}/{image_id}{FILE_SUFFIX}"


def encode_entry(rgb: np.ndarray, fov_mask: np.ndarray) -> bytes:
    """Serialise a crop and its FOV mask (see the module docstring for the format)."""
    height, width = fov_mask.shape
    payload = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes() + np.packbits(fov_mask.astype(bool)).tobytes()
    return HEADER.pack(MAGIC, height, width) + zlib.compress(payload, ZLIB_LEVEL)


def decode_entry(data: bytes, name: str = "a cached image") -> tuple[np.ndarray, np.ndarray]:
    """Parse :func:`encode_entry` bytes into ``(rgb uint8 (H, W, 3), mask bool (H, W))``.

    Raises:
        CacheError: the bytes are not a complete cache entry.
    """
    try:
        magic, height, width = HEADER.unpack_from(data)
        payload = zlib.decompress(data[HEADER.size:])
    except (struct.error, zlib.error):
        magic, payload, height, width = b"", b"", 0, 0
    n_rgb = height * width * 3
    if magic != MAGIC or len(payload) != n_rgb + (height * width + 7) // 8:
        raise CacheError(f"The cache file of {name} is damaged; delete it and {PREPARE_HINT}.")
    rgb = np.frombuffer(payload, np.uint8, n_rgb).reshape(height, width, 3)
    mask = np.unpackbits(np.frombuffer(payload, np.uint8, offset=n_rgb), count=height * width).view(bool)
    return rgb, mask.reshape(height, width)


def source_changed(path: Path, size: int, mtime_ns: int, sha256: str) -> bool:
    """Whether a source file differs from what was cached: size+mtime fast path, SHA-256 when those differ."""
    try:
        stat = path.stat()
    except OSError:
        return True
    if stat.st_size == size and stat.st_mtime_ns == mtime_ns:
        return False
    return stat.st_size != size or sha256_file(path) != sha256


class TrainingCache:
    """Read access to a complete, current training cache (see the module docstring for the layout)."""

    def __init__(self, path: Path, manifest: dict, source_verified: bool) -> None:
        self.path = path
        self.manifest = manifest
        self.source_verified = source_verified
        self.size: int = int(manifest["size"])
        self._records = [CacheRecord(**{k: r[k] for k in ("image_id", "patient", "level", "label", "split")})
                         for r in manifest["records"]]
        self._files = {r["image_id"]: path / r["file"] for r in manifest["records"]}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_workers = 0

    @classmethod
    def open(cls, path: str | Path, verify_source: bool | None = None) -> TrainingCache:
        """Open a cache folder after checking it is complete and current.

        Args:
            path: the folder given to ``prepare --out``.
            verify_source: check every source image and label file against the recorded size+mtime (SHA-256
                when those differ). ``None`` checks when the source folder exists and warns when it does not
                (a cache copied to a server without the photographs); ``False`` skips the check.

        Returns:
            The cache.

        Raises:
            CacheError: the cache is missing or incomplete, or was made by another preprocessing version or
                from source files that have changed since.
        """
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            if (path / JOURNAL).is_file() or (path / STATE).is_file():
                raise CacheError(f"The training cache {path} is incomplete (prepare did not finish); {PREPARE_HINT} to "
                                 "complete it.")
            raise CacheError(f"There is no training cache in {path}; create it with `python -m trainer prepare SOURCE "
                             f"--out {path}`.")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CacheError(f"The manifest of the training cache {path} cannot be read ({exc}); "
                             f"{PREPARE_HINT}.") from exc
        if manifest.get("format") != CACHE_FORMAT or manifest.get("codec") != CODEC:
            raise CacheError(f"The training cache {path} has an unknown format ({manifest.get('format')}); "
                             f"{PREPARE_HINT} to rebuild it.")
        current = preprocess_version()
        if manifest.get("preprocess_version") != current:
            raise CacheError(
                f"The training cache {path} was made with preprocessing version {manifest.get('preprocess_version')} "
                f"but the code is at {current}; {PREPARE_HINT} to rebuild it."
            )
        root = Path(manifest["source"]["root"])
        verify = root.is_dir() if verify_source is None else verify_source
        if verify_source is None and not verify:
            warnings.warn(f"The source folder {root} of the training cache {path} is absent, so its images were not "
                          "checked.",
                          stacklevel=2)
        if verify:
            cls._verify_source(path, root, manifest)
        return cls(path, manifest, source_verified=verify)

    @staticmethod
    def _verify_source(path: Path, root: Path, manifest: dict) -> None:
        checked = [(root / r["source"], r["source_size"], r["source_mtime_ns"], r["source_sha256"])
                   for r in manifest["records"]]
        checked += [(root / f["path"], f["size"], f["mtime_ns"], f["sha256"])
                    for f in manifest["source"]["label_files"]]
        changed = [str(p) for p, size, mtime, digest in checked if source_changed(p, size, mtime, digest)]
        if changed:
            raise CacheError(
                f"The training cache {path} is stale: {len(changed)} source file(s) changed or disappeared since it "
                f"was made (first: {changed[0]}); {PREPARE_HINT} to rebuild it."
            )

    def records(self, split: str | None = None) -> list[CacheRecord]:
        """The cached images, sorted by id; only those of ``split`` (``"train"``, ``"val"``, ``"test"``) when given."""
        if split is None:
            return list(self._records)
        if split not in ("train", "val", "test"):
            raise CacheError(f"There is no split called {split!r}; use train, val or test.")
        return [record for record in self._records if record.split == split]

    def read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """One image: ``(rgb uint8 (S, S, 3), fov_mask bool (S, S))``, the crop exactly as preprocessing made it.

        Raises:
            CacheError: the id is not in the cache, or its file is missing or damaged.
        """
        rgb, mask = self._decode(image_id)
        return rgb.copy(), mask

    def _decode(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Read-only RGB view and mask of one image (``read`` copies; ``read_many`` copies into its batch)."""
        file = self._files.get(image_id)
        if file is None:
            raise CacheError(f"The image {image_id} is not in the training cache {self.path}; check the id against "
                             "records().")
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CacheError(f"The cache file of {image_id} cannot be read ({exc.strerror}); {PREPARE_HINT}.") from exc
        return decode_entry(data, image_id)

    def read_many(self, image_ids: list[str] | tuple[str, ...], workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A batch: ``(rgb uint8 (N, S, S, 3), fov_mask bool (N, S, S))`` in the order of ``image_ids``.

        Args:
            image_ids: ids from :meth:`records`.
            workers: decoding threads (zlib releases the GIL); 0 decodes in the calling thread.
        """
        n, size = len(image_ids), self.size
        rgb = np.empty((n, size, size, 3), np.uint8)
        mask = np.empty((n, size, size), bool)

        def fill(i: int) -> None:
            rgb[i], mask[i] = self._decode(image_ids[i])

        if workers > 0 and n > 1:
            if self._pool is None or self._pool_workers != workers:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cache-read")
                self._pool_workers = workers
            list(self._pool.map(fill, range(n)))
        else:
            for i in range(n):
                fill(i)
        return rgb, mask

    def summary(self) -> dict:
        """What the cache holds, for run folders and model cards (JSON-able, no image data)."""
        manifest = self.manifest
        splits: dict[str, dict[str, int]] = {}
        for split in sorted({r.split for r in self._records}):
            chosen = self.records(split)
            splits[split] = {"images": len(chosen), "patients": len({r.patient for r in chosen}),
                             "referable": sum(r.label for r in chosen)}
        levels: dict[str, int] = {}
        for record in self._records:
            levels[str(record.level)] = levels.get(str(record.level), 0) + 1
        return {
            "cache": str(self.path),
            "format": manifest["format"],
            "size": self.size,
            "preprocess_version": manifest["preprocess_version"],
            "source_root": manifest["source"]["root"],
            "layout": manifest["source"]["layout"],
            "label_files": [f["path"] for f in manifest["source"]["label_files"]],
            "referable_level": manifest["referable_level"],
            "val_fraction": manifest["val_fraction"],
            "seed": manifest["seed"],
            "limit": manifest.get("limit"),
            "images": len(self._records),
            "splits": splits,
            "levels": dict(sorted(levels.items())),
            "skipped": len(manifest["skipped"]),
            "skipped_images": [{"image_id": s["image_id"], "reason": s["reason"]} for s in manifest["skipped"]],
            "labels_without_image": manifest["dataset"]["labels_without_image"],
            "images_without_label": manifest["dataset"]["images_without_label"],
            "created": manifest["created"],
            "source_verified": self.source_verified,
        }

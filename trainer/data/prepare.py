"""``python -m trainer prepare``: preprocess an EyePACS folder once into a training cache (see trainer/data/cache.py).

Parallel over cores (one process per worker), a tqdm progress bar with ETA, resumable: every finished image is
one atomically written cache file plus one journal line, so a re-run (also after SIGKILL or power loss) skips the
images already done and re-does only those whose source file changed (size+mtime, confirmed by SHA-256). A cache
made with another preprocessing version or size is wiped and rebuilt. Images that cannot be used (corrupt,
truncated, black, not a fundus) are skipped with the error's sentence as the reason and never stop the run.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.atomic import sha256_file, write_atomic
from device.errors import ScreeningError
from trainer.data.cache import (
    CACHE_FORMAT,
    CODEC,
    JOURNAL,
    MANIFEST,
    SHARDS,
    SKIPPED_CSV,
    STATE,
    TrainingCache,
    encode_entry,
    preprocess_version,
    shard_path,
)
from trainer.data.eyepacs import (
    REFERABLE_LEVEL,
    VAL_FRACTION,
    DatasetError,
    EyePACSDataset,
    EyePACSImage,
    split_by_patient,
)

LOCK = ".prepare.lock"  # one prepare per cache folder at a time
JOURNAL_FSYNC_S = 2.0  # fsync the journal at most this often; a lost tail only means those images are redone


class Task(NamedTuple):
    """One image for a worker process (plain strings: it is pickled)."""

    image_id: str
    path: str
    source: str  # path relative to the dataset root, as recorded in the manifest
    out: str
    file: str  # cache file relative to ``out``
    size: int
    expected_sha: str | None  # SHA-256 of the cached version: an unchanged file (touched only) is not redone


class PrepareConfig(BaseModel):
    """Options of ``prepare`` (see ``python -m trainer prepare --help``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path = Field(description="EyePACS folder: Kaggle layout, flat images/ + labels.csv, or any with images_dir")
    out: Path = Field(description="cache folder (created; must be empty or an existing cache)")
    size: int = Field(512, ge=64, le=2048, description="model input size in pixels (DESIGN.md §2.1: 512)")
    workers: int = Field(0, ge=0, le=512, description="worker processes; 0 = one per CPU core, 1 = in this process")
    labels: Path | None = Field(None, description="label CSV (image,level); default: the layout's own file")
    images_dir: Path | None = Field(None, description="folder of the photographs, relative to source or absolute")
    referable_level: int = Field(REFERABLE_LEVEL, ge=1, le=4, description="grade from which an image is referable")
    val_fraction: float = Field(VAL_FRACTION, ge=0.0, lt=1.0, description="share of patients for validation")
    seed: int = Field(0, description="seed of the patient split and of --limit")
    limit: int | None = Field(None, ge=1, description="cache at most this many images (whole patients, seeded choice)")
    progress: bool = Field(True, description="show a progress bar")


def prepare(config: PrepareConfig) -> dict:
    """Build or complete the training cache ``config.out`` from ``config.source``.

    Returns:
        :meth:`TrainingCache.summary` of the finished cache (counts, skipped images with reasons, version).

    Raises:
        DatasetError: the source is not a readable EyePACS folder, or ``out`` is a non-empty non-cache folder.
    """
    started = time.perf_counter()
    dataset = EyePACSDataset.read(config.source, config.labels, config.images_dir, config.referable_level)
    images = choose_subset(dataset.images, config.limit, config.seed)
    splits = split_by_patient(images, config.val_fraction, config.seed)
    out = Path(config.out)
    _check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel even after SIGKILL
        except OSError as exc:
            raise DatasetError(f"Another prepare is writing to {out}; wait for it to finish or choose another "
                               "--out.") from exc
        _claim_folder(out, {"format": CACHE_FORMAT, "codec": CODEC, "preprocess_version": preprocess_version(),
                            "size": config.size})
        done = _read_journal(out / JOURNAL)
        tasks = [t for t in (_task(image, dataset.root, done, out, config.size) for image in images) if t is not None]
        if tasks:
            (out / MANIFEST).unlink(missing_ok=True)  # incomplete from here until the new manifest lands
            done.update(_run(tasks, out / JOURNAL, config.workers, config.progress))
        manifest = _manifest(config, dataset, images, splits, done, time.perf_counter() - started, len(tasks))
        _write_skipped(out / SKIPPED_CSV, manifest["skipped"])
        write_atomic(out / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
        if tasks:  # one line per image again (re-runs append the redone ones)
            write_atomic(out / JOURNAL, "".join(json.dumps(e) + "\n" for e in done.values()).encode("utf-8"))
    return TrainingCache.open(out, verify_source=True).summary()


def choose_subset(images: tuple[EyePACSImage, ...], limit: int | None, seed: int) -> tuple[EyePACSImage, ...]:
    """At most ``limit`` images, taking whole patients in a seeded random order (all images when ``limit`` is None)."""
    if limit is None or limit >= len(images):
        return images
    by_patient: dict[str, list[EyePACSImage]] = {}
    for image in images:
        by_patient.setdefault(image.patient, []).append(image)
    patients = sorted(by_patient)
    chosen: list[EyePACSImage] = []
    for index in np.random.default_rng(seed).permutation(len(patients)):
        group = by_patient[patients[index]]
        if len(chosen) + len(group) > limit:
            continue
        chosen.extend(group)
    return tuple(sorted(chosen, key=lambda image: image.image_id))


def _check_folder(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a folder with other content (it would be mixed with the cache)."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"The cache path {out} is a file; choose a folder for --out.")
    is_cache = (out / STATE).is_file() or (out / MANIFEST).is_file()
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and not is_cache:
        raise DatasetError(f"The folder {out} is not empty and is not a training cache; choose an empty or new folder "
                           "for --out.")


def _claim_folder(out: Path, state: dict) -> None:
    """Keep the cache folder's files, or wipe them when made by another preprocessing version, size or codec."""
    try:
        old = json.loads((out / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old != state:
        for name in (MANIFEST, JOURNAL, SKIPPED_CSV):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / SHARDS, ignore_errors=True)
        write_atomic(out / STATE, json.dumps(state, indent=1).encode("utf-8"))
    for tmp in out.glob(f"{SHARDS}/*/.*.tmp"):  # half-written files of a killed run
        tmp.unlink(missing_ok=True)


def _read_journal(path: Path) -> dict[str, dict]:
    """Image id -> its last journal entry; a torn last line (killed mid-write) is ignored."""
    entries: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                entries[entry["image_id"]] = entry
            except (ValueError, KeyError, TypeError):
                continue
    return entries


def _task(image: EyePACSImage, root: Path, done: dict[str, dict], out: Path, size: int) -> Task | None:
    """The work for one image, or None when the journal says it is done and its source is unchanged."""
    source = os.path.relpath(image.path, root)
    entry = done.get(image.image_id)
    expected_sha = None
    if entry is not None and entry.get("source") == source:
        stat = image.path.stat()
        same_stat = entry["source_size"] == stat.st_size and entry["source_mtime_ns"] == stat.st_mtime_ns
        finished = entry["status"] == "skipped" or (out / entry["file"]).is_file()
        if same_stat and finished:
            return None
        expected_sha = entry["source_sha256"] if entry["status"] == "ok" and finished else None
    return Task(image.image_id, str(image.path), source, str(out), shard_path(image.image_id), size, expected_sha)


def _run(tasks: list[Task], journal: Path, workers: int, progress: bool) -> dict[str, dict]:
    """Run the tasks (in a process pool unless ``workers == 1``), appending each result to the journal."""
    from tqdm import tqdm

    n_workers = min(workers or os.cpu_count() or 1, len(tasks))
    results: dict[str, dict] = {}
    bar = tqdm(total=len(tasks), unit="img", desc="prepare", disable=not progress, smoothing=0.05)
    last_sync, skipped = time.monotonic(), 0
    with open(journal, "a", encoding="utf-8") as log:
        pool = None
        if n_workers > 1:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(n_workers, initializer=_init_worker)
            stream = pool.imap_unordered(prepare_one, tasks, chunksize=1)
        else:
            _init_worker()
            stream = map(prepare_one, tasks)
        try:
            for entry in stream:
                log.write(json.dumps(entry) + "\n")
                log.flush()
                if time.monotonic() - last_sync > JOURNAL_FSYNC_S:
                    os.fsync(log.fileno())
                    last_sync = time.monotonic()
                results[entry["image_id"]] = entry
                bar.update(1)
                if entry["status"] == "skipped":
                    skipped += 1
                    bar.set_postfix(skipped=skipped)
            os.fsync(log.fileno())
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
    return results


def _init_worker() -> None:
    """One OpenCV thread per worker process: the pool already uses every core."""
    import cv2

    cv2.setNumThreads(1)


def _manifest(config: PrepareConfig, dataset: EyePACSDataset, images: tuple[EyePACSImage, ...],
              splits: dict[str, str], done: dict[str, dict], elapsed_s: float, n_processed: int) -> dict:
    records, skipped = [], []
    for image in images:
        entry = done[image.image_id]
        if entry["status"] == "skipped":
            skipped.append({k: entry[k] for k in ("image_id", "source", "error", "reason")})
            continue
        records.append({
            "image_id": image.image_id, "patient": image.patient, "level": image.level, "label": image.label,
            "split": splits[image.image_id], "file": entry["file"], "source": entry["source"],
            "source_size": entry["source_size"], "source_mtime_ns": entry["source_mtime_ns"],
            "source_sha256": entry["source_sha256"],
        })
    label_files = []
    for path in dataset.label_files:
        stat = path.stat()
        label_files.append({"path": os.path.relpath(path, dataset.root), "size": stat.st_size,
                            "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)})
    return {
        "format": CACHE_FORMAT, "codec": CODEC, "preprocess_version": preprocess_version(), "size": config.size,
        "source": {"root": str(dataset.root.resolve()), "layout": dataset.layout, "label_files": label_files},
        "referable_level": config.referable_level, "val_fraction": config.val_fraction, "seed": config.seed,
        "limit": config.limit,
        "dataset": {"labels_without_image": dataset.labels_without_image,
                    "images_without_label": len(dataset.images_without_label)},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "last_run": {"processed": n_processed, "elapsed_s": round(elapsed_s, 2), "workers": config.workers},
        "records": records, "skipped": skipped,
    }


def _write_skipped(path: Path, skipped: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image_id", "source", "error", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(skipped)
    write_atomic(path, buffer.getvalue().encode("utf-8"))


def prepare_one(task: Task) -> dict:
    """Hash, decode, preprocess and cache one image (runs in a worker process).

    Returns:
        The journal entry: ids, source size/mtime/SHA-256, ``status`` ``"ok"`` or ``"skipped"`` and, when
        skipped, the error class and its one-sentence message as ``reason``. Never raises for a bad image.
    """
    entry = {"image_id": task.image_id, "source": task.source, "file": task.file, "status": "ok", "error": "",
             "reason": "", "source_size": -1, "source_mtime_ns": 0, "source_sha256": ""}
    name = Path(task.path).name
    try:
        with open(task.path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as exc:
        return {**entry, "status": "skipped", "error": "ImageReadError",
                "reason": f"The file {name} cannot be read ({exc.strerror}); check that it exists and is readable."}
    digest = hashlib.sha256(data).hexdigest()
    entry.update(source_size=stat.st_size, source_mtime_ns=stat.st_mtime_ns, source_sha256=digest)
    target = Path(task.out) / task.file
    if task.expected_sha == digest and target.is_file():
        return entry
    try:
        from device.imageio import load_image
        from device.preprocess import preprocess

        pre = preprocess(load_image(data, name=name), size=task.size, label=name)
        write_atomic(target, encode_entry(pre.rgb, pre.fov_mask))
    except ScreeningError as exc:
        return {**entry, "status": "skipped", "error": type(exc).__name__, "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one odd file must never stop a 35,000-image run
        return {**entry, "status": "skipped", "error": type(exc).__name__,
                "reason": f"The file {name} could not be preprocessed ({type(exc).__name__}: {exc}); inspect or remove "
                          "it."}
    return entry


def print_summary(summary: dict) -> None:
    """Print what ``prepare`` cached: one line per split and one per skipped image."""
    print(f"cache {summary['cache']}: {summary['images']} images at {summary['size']} px "
          f"(preprocessing {summary['preprocess_version']}), {summary['skipped']} skipped")
    for split, counts in summary["splits"].items():
        print(f"  {split:5s} {counts['images']:6d} images  {counts['patients']:6d} patients  {counts['referable']:6d} "
              "referable")
    for item in summary["skipped_images"]:
        print(f"  skipped {item['image_id']}: {item['reason']}")
    if summary["labels_without_image"] or summary["images_without_label"]:
        print(f"  {summary['labels_without_image']} label rows without an image file, "
              f"{summary['images_without_label']} image files without a label (left out)")

"""Benchmark: ``trainer prepare`` throughput and training-cache read throughput at 512 px, per core, in one run.

Run: ``python bench/bench_prepare.py [--n 40] [--height 1024] [--workers 2] [--kaggle DIR]``.

Measured on synthetic Kaggle-layout photographs (so it runs anywhere) and, when present, on the 10 original
Kaggle photographs in ../shared/data/eyepacs_kaggle_sample (real 5-16 MP JPEGs). Prints one table: images/s per
core for preprocessing into the cache, for reading the cache, and for reading + ``standardise`` (the CPU work of
the training input pipeline, ``trainer.training.input_pipeline.BatchSequence``), with the ratio to the target of
>= 1,000 images/s on a 16-core server (DESIGN.md §5, issue 3), i.e. 62.5 images/s per core. A second table
compares the cache codec with the alternatives on the same crops (the measurement behind trainer/data/cache.py).
Rates per core are images per CPU-second (this process's threads plus the worker processes), so they hold on a
busy shared machine; the wall-clock rate is printed beside them. Reads hit the page cache (the files were just
written): this is the CPU cost; disk bandwidth comes on top.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core per process
    os.environ.setdefault(_var, "1")

import argparse
import resource
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from device.preprocess import standardise
from trainer.data.cache import TrainingCache, decode_entry, encode_entry
from trainer.data.prepare import PrepareConfig, prepare
from trainer.synthetic.writers import write_kaggle_folder

SERVER_TARGET_IMAGES_PER_S = 1000.0  # issue 3: a 16-core GPU server reads the cache at >= 1,000 images/s
SERVER_CORES = 16
PER_CORE_TARGET = SERVER_TARGET_IMAGES_PER_S / SERVER_CORES
SIZE = 512  # DESIGN.md §2.1
MIN_SECONDS = 1.0  # repeat read measurements until they last this long
KAGGLE_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eyepacs_kaggle_sample"


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (the prepare worker pool)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed_prepare(source: Path, out: Path, workers: int, **kwargs) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds) of one prepare run."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    summary = prepare(PrepareConfig(source=source, out=out, size=SIZE, workers=workers, progress=False, **kwargs))
    return summary["images"] + summary["skipped"], time.perf_counter() - wall, _cpu_seconds() - cpu


def _rate(work, n_per_call: int) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds) of ``work()`` (``n_per_call`` images) repeated >= MIN_SECONDS."""
    work()  # warm-up
    calls, wall, cpu = 0, time.perf_counter(), _cpu_seconds()
    while time.perf_counter() - wall < MIN_SECONDS or calls < 3:
        work()
        calls += 1
    return calls * n_per_call, time.perf_counter() - wall, _cpu_seconds() - cpu


def _read_rows(cache: TrainingCache, label: str, threads: int) -> list[tuple[str, int, float, float]]:
    ids = [r.image_id for r in cache.records()]
    rows = [
        (f"{label}: read one by one", *_rate(lambda: [cache.read(i) for i in ids], len(ids))),
        (f"{label}: read_many", *_rate(lambda: cache.read_many(ids), len(ids))),
        (f"{label}: read_many + standardise", *_rate(lambda: standardise(*cache.read_many(ids)), len(ids))),
    ]
    if threads > 1:
        rows.append((f"{label}: read_many, {threads} threads",
                     *_rate(lambda: cache.read_many(ids, workers=threads), len(ids))))
    return rows


def _codec_rows(cache: TrainingCache) -> list[tuple[str, float, float]]:
    crops = [cache.read(r.image_id) for r in cache.records()]
    n_rgb = SIZE * SIZE * 3

    def raw(rgb, mask):
        return rgb.tobytes() + np.packbits(mask).tobytes()

    def raw_decode(data):
        rgb = np.frombuffer(data, np.uint8, n_rgb).reshape(SIZE, SIZE, 3)
        return rgb, np.unpackbits(np.frombuffer(data, np.uint8, offset=n_rgb))

    def png(rgb, mask):
        encoded = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
        return encoded + np.packbits(mask).tobytes()

    def png_decode(data):
        return cv2.imdecode(np.frombuffer(data, np.uint8, len(data) - SIZE * SIZE // 8), cv2.IMREAD_COLOR)

    codecs = {
        "raw uint8 + packed mask": (raw, raw_decode),
        "zlib-1 raw + packed mask (chosen)": (encode_entry, decode_entry),
        "zlib-6 raw + packed mask": (lambda r, m: zlib.compress(raw(r, m), 6),
                                     lambda d: raw_decode(zlib.decompress(d))),
        "PNG level 1 (RGB) + packed mask": (png, png_decode),
        "JPEG q95 (lossy, reference only)": (
            lambda r, m: cv2.imencode(".jpg", r[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
            lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR)),
    }
    rows = []
    for name, (encode, decode) in codecs.items():
        start = time.perf_counter()
        blobs = [encode(rgb, mask) for rgb, mask in crops]
        encode_ms = (time.perf_counter() - start) / len(crops) * 1000
        kib = sum(len(b) for b in blobs) / len(blobs) / 1024
        n, _, cpu = _rate(lambda decode=decode, blobs=blobs: [decode(b) for b in blobs], len(blobs))
        rows.append((name, n / cpu, kib, encode_ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="synthetic photographs (both eyes of n/2 patients)")
    parser.add_argument("--height", type=int, default=1024, help="synthetic photograph height in px (width 1-1.5x)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes/threads for the parallel "
                                                                                 "rows")
    parser.add_argument("--kaggle", type=Path, default=KAGGLE_SAMPLE, help="Kaggle sample folder (skipped if absent)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rows: list[tuple[str, int, float, float]] = []  # (case, images, wall s, CPU s)
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        write_kaggle_folder(tmp_path / "synthetic", max(1, args.n // 2), size=args.height, seed=0)
        print(f"(generated {args.n} synthetic photographs of height {args.height} px in "
              f"{time.perf_counter() - start:.1f} s)")
        rows.append((f"prepare synthetic h={args.height}, 1 process",
                     *_timed_prepare(tmp_path / "synthetic", tmp_path / "cache1", workers=1)))
        if args.workers > 1:
            rows.append((f"prepare synthetic, {args.workers} processes",
                         *_timed_prepare(tmp_path / "synthetic", tmp_path / "cacheN", workers=args.workers)))
        synthetic = TrainingCache.open(tmp_path / "cache1")
        rows += _read_rows(synthetic, "synthetic cache", args.workers)
        kaggle = None
        if (args.kaggle / "sample").is_dir():
            rows.append(("prepare 10 Kaggle originals, 1 process",
                         *_timed_prepare(args.kaggle, tmp_path / "kaggle", workers=1, images_dir="sample")))
            kaggle = TrainingCache.open(tmp_path / "kaggle")
            rows += _read_rows(kaggle, "Kaggle cache", args.workers)
        print(f"\n{'case (512 px cache)':42s} {'img/s wall':>10s} {'img/s per CPU-s':>16s} {'per core / 62.5':>16s}")
        for name, n, wall, cpu in rows:
            per_core = n / cpu
            ratio = f"{per_core / PER_CORE_TARGET:16.2f}" if "prepare" not in name else f"{'-':>16s}"
            print(f"{name:42s} {n / wall:10.1f} {per_core:16.1f} {ratio}")
        codec_source = kaggle or synthetic
        print(f"\ncodec on the {'Kaggle' if kaggle else 'synthetic'} 512 px crops   "
              f"{'decode img/s per CPU-s':>22s} {'KiB/image':>10s} {'encode ms':>10s}")
        for name, rate, kib, encode_ms in _codec_rows(codec_source):
            print(f"{name:42s} {rate:22.1f} {kib:10.1f} {encode_ms:10.1f}")


if __name__ == "__main__":
    main()

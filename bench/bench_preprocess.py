"""Preprocessing cost for a 4928x3264 photograph next to a plain cv2.resize of it, measured in one run.

    python -m bench.bench_preprocess [--repeats 20] [--size 512]

Uses the real Kaggle 4928x3264 original (15_left.jpeg) when ../shared/data is present, else a generated
photograph of the same size. Decoding is timed separately: it is the same for any pipeline.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from device.fov import find_fov
from device.imageio import load_image
from device.preprocess import crop_to_fov, preprocess, standardise

KAGGLE_4928 = Path(__file__).resolve().parents[1].parent / "shared/data/eyepacs_kaggle_sample/sample/15_left.jpeg"


def _photo() -> tuple[np.ndarray, str]:
    if KAGGLE_4928.exists():
        return load_image(KAGGLE_4928), "Kaggle original 15_left.jpeg"
    h, w = 3264, 4928
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 <= (0.48 * h) ** 2
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[disc] = (180, 90, 40)
    return rgb, "generated 4928x3264 disc"


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    rgb, source = _photo()
    size = args.size
    fov = find_fov(rgb)
    crop, mask, _ = crop_to_fov(rgb, fov, size)
    data = KAGGLE_4928.read_bytes() if KAGGLE_4928.exists() else cv2.imencode(".jpg", rgb)[1].tobytes()
    rows = [
        ("decode JPEG (load_image)", _time(lambda: load_image(data), max(3, args.repeats // 4))),
        ("cv2.resize whole photo (baseline)",
         _time(lambda: cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA), args.repeats)),
        ("find_fov", _time(lambda: find_fov(rgb), args.repeats)),
        ("crop_to_fov (crop + resize + mask)", _time(lambda: crop_to_fov(rgb, fov, size), args.repeats)),
        ("standardise", _time(lambda: standardise(crop, mask), args.repeats)),
        ("preprocess (all three)", _time(lambda: preprocess(rgb, size), args.repeats)),
    ]
    base = rows[1][1]
    print(f"# preprocessing, {rgb.shape[1]}x{rgb.shape[0]} -> {size}px, {source}; "
          f"{platform.processor() or platform.machine()}, "
          f"{cv2.getNumThreads()} OpenCV threads, median of {args.repeats}")
    print(f"| {'stage':38s} | {'ms':>8s} | {'x plain resize':>14s} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 16}|")
    for name, ms in rows:
        print(f"| {name:38s} | {ms:8.1f} | {ms / base:14.2f} |")


if __name__ == "__main__":
    main()

"""Benchmark: synthetic fundus generation speed on one core (issue 2 target: >= 20 images/s at 512 px).

Run: ``python bench/bench_synthetic.py [--n 60]``. Prints one table measured in this run: per case, images per
wall-clock second, images per CPU second of this process (what one core delivers, robust to other jobs sharing the
machine) and its ratio to the 20 images/s target.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ.setdefault(_var, "1")

import argparse
import time

import cv2

from trainer.synthetic import generate_fundus

TARGET_IMAGES_PER_S = 20.0  # issue 2, item 3


def _rates(n: int, make) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process)."""
    make(0)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(1, n + 1):
        make(i)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="images per case")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    cases = {
        "generate 512x512 (random grade)": lambda i: generate_fundus(i, size=512),
        "generate 512x512, grade 4": lambda i: generate_fundus(i, size=512, grade=4),
        "generate 512x512 + JPEG encode": lambda i: cv2.imencode(".jpg", generate_fundus(i, size=512).image),
        "generate 1500x1152 (DiaretDB1 frame)": lambda i: generate_fundus(i, width=1500, height=1152),
    }
    print(f"{'case':40s} {'images/s wall':>14s} {'images/s CPU':>13s} {'CPU ratio to 20/s':>18s}")
    for name, make in cases.items():
        n = args.n if "1500" not in name else max(5, args.n // 6)
        wall, cpu = _rates(n, make)
        print(f"{name:40s} {wall:14.1f} {cpu:13.1f} {cpu / TARGET_IMAGES_PER_S:18.2f}")


if __name__ == "__main__":
    main()

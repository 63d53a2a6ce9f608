"""Evaluation time for the DiaretDB1 images, split into reading, inference and metric computation.

One command, one table, all rows measured in the same run on the same machine::

    python bench/bench_evaluate.py                       # real ../shared/data/diaretdb1 when present, else synthetic
    python bench/bench_evaluate.py --model models/<id>   # add a TFLite bundle row (the unit's runtime)
    python bench/bench_evaluate.py --images 20           # fewer images (quick look)

Rows: the oracle (no model: the protocol alone), a tiny random-weight Keras CAM net (TensorFlow, CPU), and an
optional bundle or run folder. "metrics" is the full protocol per image (normalise, threshold, connected components at
1500x1152, matching against the four lesion types, region scores) plus the final aggregation with bootstrap
intervals; "regions" is one ``device.regions.propose_regions`` call at the unit's threshold.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.regions import REGION_THRESHOLD, propose_regions
from trainer.data.diaretdb1 import load_diaretdb1
from trainer.evaluate import EvaluationConfig
from trainer.evaluate.predictors import ModelPredictor, OraclePredictor, load_predictor
from trainer.evaluate.runner import evaluate_diaretdb1

REAL_ROOT = REPO.parent / "shared" / "data" / "diaretdb1"
TINY_SIZE, TINY_WIDTH = 256, 0.125  # a small CAM net: the row measures the pipeline, not a trained model


def tiny_keras_predictor() -> ModelPredictor:
    """The project's CAM architecture at 256 px and 1/8 width, random weights, TensorFlow on the CPU."""
    from trainer.model import build_cam_model

    model = build_cam_model(TINY_SIZE, TINY_WIDTH, name="bench_cam")

    def model_fn(image: np.ndarray) -> tuple[float, np.ndarray]:
        out = model(image[None], training=False)
        return float(np.asarray(out["probs"])[0, 1]), np.asarray(out["cam"], np.float32)[0]

    return ModelPredictor(model_fn, TINY_SIZE, f"keras-tiny-{TINY_SIZE}px")


def smooth_cam(rng: np.random.Generator, n_blobs: int = 6) -> np.ndarray:
    """A CAM-like 32x32 map: a few Gaussian blobs (what a trained network's CAM looks like)."""
    yy, xx = np.mgrid[0:32, 0:32]
    cam = np.zeros((32, 32), np.float32)
    for _ in range(n_blobs):
        cy, cx, sigma = rng.uniform(4, 28), rng.uniform(4, 28), rng.uniform(1, 3)
        cam += rng.uniform(0.5, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return cam


def region_ms(db, n: int = 30) -> tuple[float, float]:
    """Median ms of one propose_regions call (32x32 CAM -> full resolution, FOV mask): smooth and random CAMs."""
    rng = np.random.default_rng(0)
    out = []
    for cam in (smooth_cam(rng), rng.random((32, 32)).astype(np.float32)):  # realistic, and worst case (~100 regions)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            propose_regions(cam, size=db.fov_mask.shape, mask=db.fov_mask)
            times.append(time.perf_counter() - t)
        out.append(1000 * float(np.median(times)))
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REAL_ROOT), help="DiaretDB1 folder (default: the real one)")
    parser.add_argument("--model", default=None, help="a bundle (models/<id>) or run folder to add as a row")
    parser.add_argument("--images", type=int, default=89, help="number of images (default: all 89)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--sweep", choices=["score", "region_threshold"], default="score",
                        help="FROC sweep (region_threshold extracts regions at 20 thresholds per image)")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    root = Path(args.data)
    source = "real DiaretDB1"
    if not (root / "diaretdb1_v_1_1").is_dir() and not (root / "resources").is_dir():
        from trainer.synthetic import write_diaretdb1_folder

        root = Path(tmp.name) / "ddb1"
        write_diaretdb1_folder(root, n_images=min(args.images, 89), seed=0)
        source = "synthetic DiaretDB1 layout (real data absent)"
    db = load_diaretdb1(root)
    ids = db.image_ids[: args.images]
    config = EvaluationConfig(n_bootstrap=args.bootstrap, froc_sweep=args.sweep)

    def truth(image_id: str):
        masks = db.lesion_masks(image_id)
        union = np.logical_or.reduce(list(masks.values()))
        return bool(union.any()), union

    rows = [("oracle (no model; inference = re-reading the GT maps)", lambda: OraclePredictor(truth)),
            (f"Keras CAM net {TINY_SIZE} px, width {TINY_WIDTH} (TF, CPU)", tiny_keras_predictor)]
    if args.model:
        rows.append((f"{args.model}", lambda: load_predictor(args.model, truth=truth)))

    print(f"# bench_evaluate: {len(ids)} images of the {source}, {db.fov_mask.shape[1]}x{db.fov_mask.shape[0]}, "
          f"FROC sweep '{config.froc_sweep}' ({len(config.thresholds())} region extraction(s) per image), "
          f"{args.bootstrap} bootstrap resamples")
    print(f"# host: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}")
    smooth, random = region_ms(db)
    print(f"# one propose_regions call (32x32 CAM -> {db.fov_mask.shape[1]}x{db.fov_mask.shape[0]} + FOV mask, "
          f"threshold {REGION_THRESHOLD}), median: {smooth:.1f} ms for a smooth CAM, {random:.1f} ms for a random one "
          "(~100 regions)")
    print()
    print("| predictor | images | read s | inference s | inference ms/image | metrics s | metrics ms/image "
          "| total s | inference : metrics |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, make in rows:
        predictor = make()
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            result = evaluate_diaretdb1(root, predictor, out, config, n_overlays=0, image_ids=ids, progress=False,
                                        db=db)
            total = time.perf_counter() - t0
        tm, n = result.timing, len(ids)
        ratio = tm.inference_s / tm.metrics_s if tm.metrics_s else float("nan")
        print(f"| {name} | {n} | {tm.load_s:.1f} | {tm.inference_s:.1f} | {1000 * tm.inference_s / n:.0f} | "
              f"{tm.metrics_s:.1f} | {1000 * tm.metrics_s / n:.0f} | {total:.1f} | {ratio:.2f} |")
    tmp.cleanup()


if __name__ == "__main__":
    main()

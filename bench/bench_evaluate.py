"""Evaluation time for the DiaretDB1 images, split into reading, inference and metric computation.

One command, one table, all rows measured in the same run on the same machine::

    python bench/bench_evaluate.py                       # real ../shared/data/diaretdb1 when present, else synthetic
    python bench/bench_evaluate.py --model models/<id>   # add a TFLite bundle row (the unit's runtime)
    python bench/bench_evaluate.py --images 20           # fewer images (quick look)

Rows: the oracle (no model: the protocol alone), a tiny random-weight Keras CAM net (TensorFlow, CPU), and an
optional bundle or run folder. "metrics" is the full protocol per image (normalise, threshold at every value of the
FROC sweep, connected components at 1500x1152, matching against the four lesion types) plus the final aggregation
with bootstrap intervals; "regions" is one ``device.regions.propose_regions`` call at the unit's threshold.
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

from device.regions import propose_regions  # noqa: E402
from trainer.data.diaretdb1 import load_diaretdb1  # noqa: E402
from trainer.evaluate import EvaluationConfig  # noqa: E402
from trainer.evaluate.predictors import ModelPredictor, OraclePredictor, load_predictor  # noqa: E402
from trainer.evaluate.runner import evaluate_diaretdb1  # noqa: E402

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


def region_ms(db, n: int = 20) -> float:
    """Median time of one propose_regions call on a full-resolution upsampled 32x32 CAM."""
    rng = np.random.default_rng(0)
    cam = rng.random((32, 32)).astype(np.float32)
    shape = db.fov_mask.shape
    times = []
    for _ in range(n):
        t = time.perf_counter()
        propose_regions(cam, size=shape, mask=db.fov_mask)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REAL_ROOT), help="DiaretDB1 folder (default: the real one)")
    parser.add_argument("--model", default=None, help="a bundle (models/<id>) or run folder to add as a row")
    parser.add_argument("--images", type=int, default=89, help="number of images (default: all 89)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default: 2000)")
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
    config = EvaluationConfig(n_bootstrap=args.bootstrap)

    def truth(image_id: str):
        masks = db.lesion_masks(image_id)
        union = np.logical_or.reduce(list(masks.values()))
        return bool(union.any()), union

    rows = [("oracle (no model)", lambda: OraclePredictor(truth)), ("Keras tiny CAM net", tiny_keras_predictor)]
    if args.model:
        rows.append((f"{args.model}", lambda: load_predictor(args.model, truth=truth)))

    print(f"# bench_evaluate: {len(ids)} images of the {source}, {db.fov_mask.shape[1]}x{db.fov_mask.shape[0]}, "
          f"{len(config.thresholds())} region thresholds, {args.bootstrap} bootstrap resamples")
    print(f"# host: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}")
    print(f"# one propose_regions call (32x32 CAM -> {db.fov_mask.shape[1]}x{db.fov_mask.shape[0]}, threshold 0.65): "
          f"{region_ms(db):.1f} ms median")
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

"""Does a finer CAM localise better? A Lite0 run's weights at output stride 16 and 8, side by side on DiaretDB1.

Issue 14 asks whether the Lite0 CAM network localises better at output stride 16 or 8. Dilation does not change a
kernel's shape, so the weights of a run trained at stride 16 load unchanged into the network with one more stage at
stride 1 (its depthwise convolutions dilated twice as much): the same model, its CAM 2x finer (32x32 instead of
16x16 at 256 px). This is "train at 16, infer at 8", the DeepLab v3 practice, not a network trained at stride 8;
that one would take a second training run. Both rows use the same DiaretDB1 protocol (all 89 images, the paper's
rules, bootstrap intervals) and the same decision threshold (Youden J on the run's validation predictions)::

    python bench/lite0_stride.py runs/lite0_s256_e8                # writes eval folders under /tmp, prints a table
    python bench/lite0_stride.py runs/lite0_s256_e8 --out eval/stride --which last

Needs TensorFlow or JAX (Keras) and the real ../shared/data/diaretdb1. Research tool, not a medical device.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.evaluate import EvaluationConfig
from trainer.evaluate.predictors import keras_run_predictor
from trainer.evaluate.runner import evaluate_diaretdb1

REAL_ROOT = REPO.parent / "shared" / "data" / "diaretdb1"
STRIDES = (16, 8)
TYPES = ("haemorrhages", "hard_exudates", "soft_exudates", "red_small_dots")


def _ci(value, ci) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f} [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else f"{100 * value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a Lite0 training run folder (runs/<name>)")
    parser.add_argument("--which", choices=("best", "last"), default="best")
    parser.add_argument("--data", type=Path, default=REAL_ROOT, help="folder holding diaretdb1_v_1_1/")
    parser.add_argument("--out", type=Path, default=None,
                        help="evaluation folders os16/ and os8/ (default: a temp dir)")
    args = parser.parse_args(argv)
    if not (args.data / "diaretdb1_v_1_1").is_dir():
        print(f"{args.data} has no diaretdb1_v_1_1/; pass --data with the DiaretDB1 folder.", file=sys.stderr)
        return 2
    from trainer.model import LITE0_BACKBONE
    from trainer.training.train import load_run_config

    backbone = load_run_config(args.run_dir).backbone
    if backbone != LITE0_BACKBONE:
        print(f"{args.run_dir} trained the {backbone!r} network; this comparison needs a Lite0 run (--preset lite0).",
              file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="lite0_stride_"))
    rows = []
    for stride in STRIDES:
        predictor = keras_run_predictor(args.run_dir, args.which, output_stride=stride)
        started = time.perf_counter()
        result = evaluate_diaretdb1(args.data, predictor, out / f"os{stride}", EvaluationConfig(), n_overlays=6,
                                    progress=False)
        rows.append((stride, result.metrics, time.perf_counter() - started))
    machine = platform.processor() or platform.machine()
    print(f"# {args.run_dir} ({args.which} weights) on DiaretDB1, all 89 images; {machine}, "
          f"Python {platform.python_version()}; evaluation folders under {out}")
    print("| output stride | CAM at input | AUC [95 % CI] | lesion sensitivity @ 1.5 FP/image, % [95 % CI]: "
          "H | HE | SE | RSD | regions / image | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    size = rows[0][1]["model"]["details"].get("input_size")
    for stride, m, seconds in rows:
        cells = [_ci(m["lesions"][t]["froc_sensitivity_at_1.5"], m["lesions"][t].get("froc_sensitivity_at_1.5_ci95"))
                 for t in TYPES]
        auc = f"{m['auc']:.3f} [{m['auc_ci95'][0]:.2f}, {m['auc_ci95'][1]:.2f}]"
        cam = f"{size // stride}x{size // stride}" if size else f"input/{stride}"
        print(f"| {stride} | {cam} | {auc} | " + " | ".join(cells)
              + f" | {m['regions_per_image']:.2f} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

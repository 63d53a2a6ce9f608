"""Inference latency, peak memory and file size of the CAM network: Keras/TF vs LiteRT float16/int8 vs tflite-runtime.

One command, one table, every variant measured in its own subprocess in the same run (so peak RSS is that
variant's alone, and ratios are side by side on the same machine and load):

    python bench/bench_inference.py                        # the bundled default model's network + the 512 px paper net
    python bench/bench_inference.py --runs 30 --threads 1,2     # LiteRT rows at 1 and at 2 threads
    python bench/bench_inference.py --tflite-runtime-python /tmp/venv-tflrt/bin/python

Rows per network: Keras/TF float32 (a ``tf.function`` of the model, batch 1), LiteRT float16 and LiteRT int8
(``device.model.runtime.LiteRTRuntime``, the unit's own adapter), tflite-runtime int8 (the same adapter forced onto
``tflite_runtime``; tflite-runtime 2.14 needs Python 3.11 and numpy < 2, so it runs from a separate venv given with
``--tflite-runtime-python``; without one the row says why it is missing). The bundled network is benchmarked with
random weights of the same architecture and input size as the bundle (latency does not depend on the weights)
and the bundle's own ``model.tflite`` is timed as well. The stock EfficientNet-Lite0 ImageNet classifier at 224 px
(int8, random weights) is timed as a reference: published Raspberry Pi latencies are quoted for it, and its ratio to
the bundled network here carries them over (docs/export.md). Latency is per image (median and p95 over ``--runs``
after ``--warmup``), peak RSS is sampled with psutil every 5 ms from the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.model.card import EXPORT_FORMATS

FULL_SIZE, FULL_WIDTH = 512, 1.0  # DESIGN.md §2.1: the paper network
STOCK_LITE0_SIZE = 224  # the ImageNet input of EfficientNet-Lite0, at which published latencies are quoted
CALIBRATION_IMAGES = 8  # random-weight int8 conversion only needs plausible activation ranges
TFLITE_RUNTIME_NOTE = ("not run: tflite-runtime 2.14 needs Python 3.11 + numpy<2 (this venv has numpy 2); "
                       "pass --tflite-runtime-python")


def _worker(args: argparse.Namespace) -> None:
    """Subprocess body: load one variant, time it, print one JSON line."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(args.size, args.size, 3)).astype(np.float32)
    if args.variant == "keras":
        import keras
        import tensorflow as tf

        from trainer.model import build_cam_model

        keras.utils.set_random_seed(0)
        model = build_cam_model(args.size, args.width)
        serve = tf.function(lambda x: model(x, training=False), jit_compile=False)
        batch = tf.constant(image[None])

        def run():
            out = serve(batch)
            return out["probs"].numpy(), out["cam"].numpy()
    elif args.variant == "interpreter":  # a plain classifier (one output): the LiteRT interpreter without the adapter
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        scale, zero = detail["quantization"]
        quantised = np.clip(np.round(image / scale + zero), -128, 127).astype(detail["dtype"]) if scale else image

        def run():
            interpreter.set_tensor(detail["index"], quantised[None])
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    else:
        from device.model.runtime import LiteRTRuntime

        runtime = LiteRTRuntime(args.model, num_threads=args.threads, backend=args.backend)

        def run():
            return runtime.run(image)
    for _ in range(args.warmup):
        run()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95))}))


def _measure(cmd: list[str], env: dict) -> dict:
    """Run a worker, sampling its RSS; returns the worker's JSON plus ``peak_rss_mb`` or ``error``."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.005)
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (err.strip().splitlines() or ["failed"])[-1][:100]}
    return {**json.loads(lines[-1]), "peak_rss_mb": peak / 2**20}


def _convert(size: int, width: float, folder: Path) -> dict:
    """Random-weight network of this architecture -> float16 and int8 .tflite paths, and its float32 bytes."""
    import keras

    from trainer.export.convert import convert_to_tflite
    from trainer.model import build_cam_model

    keras.utils.set_random_seed(0)
    model = build_cam_model(size, width)
    calib = np.random.default_rng(1).normal(size=(CALIBRATION_IMAGES, size, size, 3)).astype(np.float32)
    paths = {"float32": model.count_params() * 4}  # bytes of the Keras float32 weights
    for fmt in EXPORT_FORMATS:
        paths[fmt] = folder / f"cam_{size}_{width}_{fmt}.tflite"
        paths[fmt].write_bytes(convert_to_tflite(model, fmt, calib if fmt == "int8" else None))
    return paths


def _convert_stock_lite0(folder: Path) -> Path:
    """The stock EfficientNet-Lite0 ImageNet classifier at 224 px (random weights) -> an int8 .tflite path.

    It is the model that published single-board-computer latencies are quoted for, so its time here against the
    bundled network's gives the ratio that carries a published Raspberry Pi figure over to our network.
    """
    import keras

    from trainer.backbones.efficientnet_lite import build_efficientnet_lite0
    from trainer.export.convert import convert_to_tflite

    keras.utils.set_random_seed(0)
    model = build_efficientnet_lite0(STOCK_LITE0_SIZE, include_top=True)
    calib = np.random.default_rng(1).normal(size=(CALIBRATION_IMAGES, STOCK_LITE0_SIZE, STOCK_LITE0_SIZE, 3))
    path = folder / "efficientnet_lite0_224_int8.tflite"
    path.write_bytes(convert_to_tflite(model, "int8", calib.astype(np.float32)))
    return path


def _networks(args: argparse.Namespace) -> list[dict]:
    from device.errors import ModelError
    from device.model.bundle import default_model_dir, read_card

    nets = []
    try:
        folder = Path(args.model) if args.model else default_model_dir()
        card = read_card(folder)
        width = card.network.width if card.network and card.network.width else None
        if width is None:
            print(f"warning: {folder} has no network width in its card; skipping its Keras/random-weight rows")
        nets.append({"label": f"bundled {card.id} ({card.input.size} px, width {width})", "size": card.input.size,
                     "width": width, "bundle": (card.format, folder / card.file)})
    except ModelError as exc:
        print(f"warning: no bundled model ({exc})")
    if not args.bundled_only:
        nets.append({"label": f"paper net ({FULL_SIZE} px, width {FULL_WIDTH})", "size": FULL_SIZE,
                     "width": FULL_WIDTH, "bundle": None})
        nets.append({"label": f"stock EfficientNet-Lite0 classifier ({STOCK_LITE0_SIZE} px, reference)",
                     "size": STOCK_LITE0_SIZE, "width": None, "bundle": None, "stock": True})
    return nets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder (default: models/DEFAULT)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=_thread_counts, default=[2],
                        help="LiteRT thread counts, comma-separated, e.g. 1,2 (TF uses its default pool)")
    parser.add_argument("--bundled-only", action="store_true", help="skip the 512 px paper network")
    parser.add_argument("--tflite-runtime-python", help="python of a venv with tflite-runtime 2.14 + numpy<2")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        return _worker(args)

    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        for net in _networks(args):
            common = ["--worker", "--runs", str(args.runs), "--warmup", str(args.warmup), "--size", str(net["size"])]
            variants = []  # (name, python, worker args, file or bytes, LiteRT threads or None for Keras)
            if net["width"] is not None:
                files = _convert(net["size"], net["width"], Path(tmp))
                variants += [("Keras/TF float32", sys.executable, ["--variant", "keras", "--width", str(net["width"])],
                              files["float32"], None)]
                for threads in args.threads:
                    variants += [(f"LiteRT {fmt}", sys.executable,
                                  ["--variant", "litert", "--model", str(files[fmt]), "--backend",
                                   "ai_edge_litert.interpreter"], files[fmt], threads) for fmt in EXPORT_FORMATS]
                    tflrt = ["--variant", "litert", "--model", str(files["int8"]), "--backend",
                             "tflite_runtime.interpreter"]
                    variants.append(("tflite-runtime int8", args.tflite_runtime_python, tflrt, files["int8"], threads))
            if net.get("stock"):
                path = _convert_stock_lite0(Path(tmp))
                variants += [("LiteRT int8", sys.executable, ["--variant", "interpreter", "--model", str(path)], path,
                              threads) for threads in args.threads]
            if net["bundle"]:
                fmt, path = net["bundle"]
                variants += [(f"LiteRT {fmt} (bundle file)", sys.executable,
                              ["--variant", "litert", "--model", str(path), "--backend", "ai_edge_litert.interpreter"],
                              path, threads) for threads in args.threads]
            keras_ms = None
            for name, python, extra, file, threads in variants:
                print(f"... {net['label']}: {name}, threads {threads or 'TF default'}", file=sys.stderr, flush=True)
                result = {"error": TFLITE_RUNTIME_NOTE} if python is None else \
                    _measure([python, __file__, *common, "--threads", str(threads or 1), *extra], env)
                if name.startswith("Keras") and "median_ms" in result:
                    keras_ms = result["median_ms"]
                size_bytes = file if isinstance(file, int) else file.stat().st_size if file else None
                rows.append((net["label"], name, threads, size_bytes / 2**20 if size_bytes else None, result,
                             keras_ms))
    _print_table(rows, args)


def _print_table(rows: list, args: argparse.Namespace) -> None:
    print(f"\nPer-image latency, batch 1, {args.runs} runs after {args.warmup} warm-up; peak RSS of the variant's "
          f"own process; speed-up = Keras median / this median.\n")
    print("| network | variant | threads | file MB | median ms | p95 ms | peak RSS MB | speed-up vs Keras |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, name, threads, size_mb, result, keras_ms in rows:
        size = f"{size_mb:.2f}" if size_mb is not None else "-"
        shown = threads if threads else "TF default"
        if "error" in result:
            print(f"| {label} | {name} | {shown} | {size} | {result['error']} | | | |")
            continue
        ratio = f"{keras_ms / result['median_ms']:.1f}x" if keras_ms else "-"
        print(f"| {label} | {name} | {shown} | {size} | {result['median_ms']:.1f} | {result['p95_ms']:.1f} | "
              f"{result['peak_rss_mb']:.0f} | {ratio} |")


def _thread_counts(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]``; argparse turns the ValueError into a one-line usage error."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(text)
    return counts


if __name__ == "__main__":
    main()

"""Training throughput (images/s): end to end vs the model-only step, measured side by side in one run.

    python bench/bench_train.py                                   # 256 and 512 px, width 1/8, a few steps (CPU)
    python bench/bench_train.py --width 1.0 --batch 64 --steps 50 # GPU: the paper network
    KERAS_BACKEND=jax python bench/bench_train.py --width 1.0 --batch 64 --steps 50 --jit on

Variants per input size, all through ``model.fit`` on the same compiled training model (forward + backward +
SGD momentum, class-weighted loss):

- ``model-only``: one pre-standardised batch already in memory, no augmentation: the ceiling;
- ``e2e, aug on device``: what ``train`` does: cached uint8 crops + FOV masks -> ``standardise`` in background
  threads (``trainer.training.input_pipeline.BatchSequence``) -> ``FundusAugment`` as a Keras layer inside the step;
- ``e2e, aug in pipeline``: the same, but augmentation with OpenCV in the input threads instead
  (``trainer.training.augment.augment_batch``; no augmentation layer in the step). ``augment.placement = "auto"``
  follows this measurement.

The crops are synthetic discs (throughput does not depend on the pixels). Reported: images/s over the timed steps
(after ``--warmup`` steps, which include compilation) and images per CPU-second of the process (all threads; the
robust figure on a shared machine), each as the median of ``--rounds`` interleaved rounds, and the ratios to
model-only. The machine, backend and load
are printed with the table, so figures from different machines are never mixed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POOL_IMAGES = 64  # distinct cached crops served round-robin (enough to defeat caching effects in the pipeline)


def _crops(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    mask = (xx - c) ** 2 + (yy - c) ** 2 <= (0.48 * size) ** 2
    rgb = rng.integers(10, 240, (n, size, size, 3), dtype=np.uint8)
    rgb[:, ~mask] = 0
    return rgb, np.repeat(mask[None], n, axis=0)


def _sequences(size: int, batch: int, steps: int, workers: int):
    import keras

    from trainer.training.augment import augment_batch
    from trainer.training.input_pipeline import BatchSequence, ImageSet

    rgb, masks = _crops(POOL_IMAGES, size)
    n = batch * steps
    labels = np.arange(n) % 2
    images = ImageSet(ids=np.arange(n).astype(str), patients=np.arange(n).astype(str), levels=labels * 2,
                      labels=labels, splits=np.array(["train"] * n),
                      read=lambda idx: (rgb[np.asarray(idx) % POOL_IMAGES], masks[np.asarray(idx) % POOL_IMAGES]),
                      size=size, source="synthetic", skipped=[])
    weights = np.ones(2, np.float32)
    on_device = BatchSequence(images, np.arange(n), batch, weights=weights, shuffle_seed=0, workers=workers)

    class PipelineAugmented(BatchSequence):
        def __getitem__(self, i):
            x, y, w = super().__getitem__(i)
            return augment_batch(x, np.random.default_rng(i)), y, w

    in_pipeline = PipelineAugmented(images, np.arange(n), batch, weights=weights, shuffle_seed=0, workers=workers)
    x0, y0, w0 = on_device[0]

    class Fixed(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, i):
            return x0, y0, w0

    return Fixed(), on_device, in_pipeline


class _Timer:
    """Wall-clock and process CPU time between the end of the warm-up and the last step."""

    def __init__(self, warmup: int):
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                now = (time.perf_counter(), time.process_time())
                if batch == warmup - 1:
                    outer.start = now
                outer.end = now

        self.callback = Callback()
        self.start = self.end = (0.0, 0.0)


def _rates(model, seq, warmup: int, steps: int, batch: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process, all threads)."""
    timer = _Timer(warmup)
    model.fit(seq, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer.callback])
    images = batch * steps
    return images / (timer.end[0] - timer.start[0]), images / max(1e-9, timer.end[1] - timer.start[1])


def bench_size(size: int, width: float, batch: int, steps: int, warmup: int, workers: int, jit: str,
               rounds: int = 3) -> dict:
    """Median (images/s wall-clock, images per CPU-second) of the three variants at one input size."""
    import keras

    from trainer.training.config import load_train_config
    from trainer.training.distribute import setup_runtime
    from trainer.training.train import build_training

    cfg = load_train_config("paper", overrides={"input_size": size, "width": width, "batch_size": batch,
                                                "jit_compile": jit})
    plain_cfg = load_train_config("paper", overrides={"input_size": size, "width": width, "batch_size": batch,
                                                      "jit_compile": jit, "augment.enabled": False})
    cfg = cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"placement": "device"})})
    runtime = setup_runtime(cfg)  # mixed precision on GPUs, as in `train`
    fixed, on_device, in_pipeline = _sequences(size, batch, warmup + steps, workers)
    augmented, _ = build_training(cfg, warmup + steps, runtime.accelerator)
    plain, _ = build_training(plain_cfg, warmup + steps, runtime.accelerator)
    variants = {"model-only": (plain, fixed), "e2e, aug on device": (augmented, on_device),
                "e2e, aug in pipeline": (plain, in_pipeline)}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved rounds: a load change on a shared machine hits every variant alike
        for name, (model, seq) in variants.items():
            samples[name].append(_rates(model, seq, warmup, steps, batch))
    rows = {name: tuple(float(np.median([s[i] for s in runs])) for i in (0, 1)) for name, runs in samples.items()}
    keras.backend.clear_session()
    return rows


def _machine() -> str:
    import keras

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devices = ""
    if keras.backend.backend() == "jax":
        import jax

        devices = ", ".join(str(d) for d in jax.devices())
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        devices = ", ".join(g.name for g in gpus) or "CPU only"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} logical CPUs, load {load:.1f}; Keras {keras.__version__} on "
            f"{keras.backend.backend()} ({devices})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--width", type=float, default=0.125, help="channel multiplier (1.0 = paper net)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation) per variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is reported")
    parser.add_argument("--workers", type=int, default=2, help="input-pipeline threads")
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                        help="auto = as `train`: on for JAX and accelerators, off for TensorFlow on CPU")
    args = parser.parse_args(argv)
    machine = _machine()
    results = {s: bench_size(s, args.width, args.batch, args.steps, args.warmup, args.workers, args.jit, args.rounds)
               for s in args.sizes}
    print(f"\nmachine: {machine}")
    print(f"width {args.width}, batch {args.batch}, median of {args.rounds} interleaved rounds of {args.steps} timed "
          f"steps after {args.warmup} warm-up, {args.workers} input threads, jit {args.jit}\n")
    print(f"| size | {'variant':<22} | images/s | vs model-only | images/CPU-s | vs model-only |")
    print(f"|---:|{'-' * 24}|---:|---:|---:|---:|")
    for size, rows in results.items():
        wall0, cpu0 = rows["model-only"]
        for name, (wall, cpu) in rows.items():
            print(f"| {size} | {name:<22} | {wall:8.1f} | {wall / wall0:6.2f} | {cpu:8.1f} | {cpu / cpu0:6.2f} |")


if __name__ == "__main__":
    main()

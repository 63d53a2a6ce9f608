"""Training throughput: the trainer's real seconds per epoch (epoch ends included) beside the model-only rate.

    python bench/bench_train.py                                  # 256 and 512 px, width 1/8, small epochs (CPU)
    KERAS_BACKEND=jax python bench/bench_train.py --width 1.0 --batch 64 --steps 43 --every 1 5   # GPU

Rows per input size, printed (and flushed) as soon as each is measured:

- ``model-only``: ``model.fit`` on one pre-standardised batch already in memory, no augmentation, no epoch ends:
  the network's own rate, the ceiling (median of ``--rounds`` back-to-back measurements);
- ``fit over the pipeline``: ``model.fit`` over the trainer's input pipeline exactly as ``train`` builds it
  (``trainer.training.input_pipeline``: images standardised once at load, ``data.workers`` threads, prefetch,
  augmentation where ``augment.placement = "auto"`` puts it), still without epoch ends;
- ``trainer, every k``: ``trainer.training.train.train`` itself on a synthetic folder (``trainer.synthetic``;
  throughput does not depend on the pixels) with ``validate_every = checkpoint_every = k``: seconds per epoch
  measured from one epoch end to the next, so validation, weights, checkpoint, history and TensorBoard are in
  it; the epochs before the first timed one (compilation, the first validation's tracing) are not timed, and the
  one-off costs of the session (loading, building, the plots at the end) are printed beside the table;
- ``model-only (again)``: the ceiling re-measured after the trainer rows; its ratio shows how much the load of
  a shared machine drifted meanwhile.

Reported: seconds per epoch of ``--steps`` steps of ``--batch`` images, images/s, images per CPU-second of the
process (all threads; the steadier figure on a shared machine), and each as a ratio to model-only. The machine,
backend and load are printed with the table, so figures from different machines are never mixed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import trainer  # noqa: F401  (before keras: picks JAX where TensorFlow is absent and KERAS_BACKEND unset)

VAL_FRACTION = 0.2  # of the patients, as in the paper preset: about 1 validation image per 4 training images


class _Timer:
    """Wall-clock and process CPU time between the end of the warm-up and the last step of one epoch."""

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


def _rates(model, seq, warmup: int, batch: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process) over one epoch of ``seq`` after
    ``warmup`` untimed steps."""
    timer = _Timer(warmup)
    model.fit(seq, epochs=1, verbose=0, callbacks=[timer.callback])
    images = batch * (len(seq) - warmup)
    return images / (timer.end[0] - timer.start[0]), images / max(1e-9, timer.end[1] - timer.start[1])


def _epoch_clock():
    """A callback that stamps (wall, CPU) at the start and after every epoch end (it runs after the trainer's own
    epoch-end callback, so the time between two stamps is a whole epoch as the trainer runs it)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.marks: list[tuple[float, float]] = []

        def on_train_begin(self, logs=None):
            self.marks.append((time.perf_counter(), time.process_time()))

        def on_epoch_end(self, epoch, logs=None):
            self.marks.append((time.perf_counter(), time.process_time()))

    return EpochClock()


def synthetic_folder(root: Path, images: int, size: int) -> Path:
    """A Kaggle-layout folder of ``images`` synthetic photographs ``size`` px high (reused when it exists)."""
    from trainer.synthetic import write_kaggle_folder

    folder = root / f"kaggle_{size}px_{images}"
    if not (folder / "trainLabels.csv").is_file():
        write_kaggle_folder(folder, n_patients=max(2, -(-images // 2)), size=size, seed=0)
    return folder


class Table:
    """Prints the rows of one size as soon as they are measured, with ratios to that size's model-only row."""

    def __init__(self):
        self.base: tuple[float, float] | None = None
        print(f"| size | {'variant':<27} | s/epoch | images/s | vs model-only | images/CPU-s | vs model-only |",
              flush=True)
        print(f"|---:|{'-' * 29}|---:|---:|---:|---:|---:|", flush=True)

    def row(self, size: int, name: str, epoch_images: int, wall: float, cpu: float, base: bool = False) -> dict:
        if base:
            self.base = (wall, cpu)
        wall0, cpu0 = self.base or (wall, cpu)
        print(f"| {size} | {name:<27} | {epoch_images / wall:7.2f} | {wall:8.1f} | {wall / wall0:6.2f} | "
              f"{cpu:8.1f} | {cpu / cpu0:6.2f} |", flush=True)
        return {"size": size, "variant": name, "seconds_per_epoch": epoch_images / wall, "images_per_s": wall,
                "ratio": wall / wall0, "images_per_cpu_s": cpu, "cpu_ratio": cpu / cpu0}


def bench_size(table: Table, size: int, args, data_root: Path) -> list[dict]:
    """Measure every row of one input size (see the module docstring)."""
    import keras

    from trainer.training.config import load_train_config
    from trainer.training.distribute import setup_runtime
    from trainer.training.input_pipeline import BatchSequence, class_weights, load_images
    from trainer.training.train import _augment_kwargs, augment_placement, build_training, train

    epoch_images = args.steps * args.batch
    folder = synthetic_folder(data_root, int(np.ceil(epoch_images / (1 - VAL_FRACTION))) + 4, size)
    base = {"input_size": size, "width": args.width, "batch_size": args.batch, "jit_compile": args.jit,
            "data.path": str(folder), "data.workers": args.workers, "data.val_fraction": VAL_FRACTION,
            "name": f"bench_{size}"}
    cfg = load_train_config("paper", overrides=base)
    runtime = setup_runtime(cfg)
    images = load_images(cfg.data, size, preload=True)
    train_idx = images.indices("train")  # all of them, as `train` uses
    steps = len(train_idx) // args.batch
    if steps <= args.warmup:
        raise SystemExit(f"only {len(train_idx)} training images at {size} px: raise --steps or lower --warmup")
    epoch_images = steps * args.batch
    print(f"  {size} px: {len(train_idx)} training images ({steps} steps of {args.batch}), "
          f"{images.indices('val').size} validation images, {images.summary()['preloaded']}", flush=True)
    weights = class_weights(images.labels[train_idx], cfg.class_weight)
    placement = augment_placement(cfg, runtime.accelerator)
    workers = cfg.data.worker_threads()
    pipeline = BatchSequence(images, train_idx, args.batch, cfg.data.normalisation, weights, shuffle_seed=0,
                             workers=workers, augment=_augment_kwargs(cfg) if placement == "pipeline" else None)
    x0, y0, w0 = pipeline[0]

    class Fixed(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, i):
            return x0, y0, w0

    plain_cfg = load_train_config("paper", overrides={**base, "augment.enabled": False})
    plain, _ = build_training(plain_cfg, steps, runtime.accelerator)
    model, _ = build_training(cfg, steps, runtime.accelerator)  # with the augmentation layer if on the device
    rows = []

    def model_only(name: str, first: bool) -> None:
        runs = [_rates(plain, Fixed(), args.warmup, args.batch) for _ in range(args.rounds)]
        wall, cpu = (statistics.median(r[i] for r in runs) for i in (0, 1))
        rows.append(table.row(size, name, epoch_images, wall, cpu, base=first))

    model_only("model-only", True)
    wall, cpu = _rates(model, pipeline, args.warmup, args.batch)
    rows.append(table.row(size, f"fit over the pipeline ({placement or 'no aug'})", epoch_images, wall, cpu))
    notes = []
    for k in args.every:
        windows = max(1, -(-args.timed_epochs // k))
        epochs = k + windows * k  # untimed: epochs 1..k (compilation, the first validation's tracing)
        run_cfg = load_train_config("paper", overrides={**base, "epochs": epochs, "validate_every": k,
                                                         "checkpoint_every": k})
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            clock, started = _epoch_clock(), time.perf_counter()
            train(run_cfg, Path(tmp) / "run", verbose=0, callbacks=[clock], log=lambda line: None)
            ended = time.perf_counter()
            history = json.loads((Path(tmp) / "run" / "history.json").read_text())[k:]
        marks = clock.marks[k:]  # the stamp after epoch k, then one per timed epoch
        timed = len(marks) - 1
        wall = epoch_images * timed / (marks[-1][0] - marks[0][0])
        cpu = epoch_images * timed / max(1e-9, marks[-1][1] - marks[0][1])
        rows.append(table.row(size, f"trainer, every {k} (x{timed})", epoch_images, wall, cpu))
        in_fit = sum(h["train_seconds"] for h in history) / max(1e-9, sum(h["seconds"] for h in history))
        notes.append(f"every {k}: {100 * (1 - in_fit):.1f} % of the timed epochs' wall time outside the fit loop "
                     f"(validation, checkpoints, callbacks); {clock.marks[1][0] - started:.1f} s from the call to "
                     "the end of epoch 1 "
                     f"(loading, building, compiling), {ended - clock.marks[-1][0]:.1f} s after the last epoch "
                     "(final writes, plots, summary)")
    model_only("model-only (again)", False)
    for note in notes:
        print(f"  {size} px, trainer {note}", flush=True)
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


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--width", type=float, default=0.125, help="channel multiplier (1.0 = paper net)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="training steps per epoch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each model-only/pipeline epoch")
    parser.add_argument("--rounds", type=int, default=3, help="model-only repetitions; the median is reported")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 4],
                        help="validate_every = checkpoint_every values of the trainer rows")
    parser.add_argument("--timed-epochs", type=int, default=4, help="timed epochs per trainer row (at least)")
    parser.add_argument("--workers", default="auto", help="data.workers: 'auto' (one per core) or a number")
    parser.add_argument("--jit", choices=["auto", "on", "off"], default="auto",
                        help="auto = as `train`: on for JAX and accelerators, off for TensorFlow on CPU")
    parser.add_argument("--data-dir", default=None, help="where the synthetic folders and runs go (default: temp)")
    args = parser.parse_args(argv)
    args.workers = args.workers if args.workers == "auto" else int(args.workers)
    from trainer.training.config import DataConfig

    threads = DataConfig(workers=args.workers).worker_threads()
    print(f"machine: {_machine()}", flush=True)
    print(f"width {args.width}, batch {args.batch}, {args.steps} steps per epoch, data.workers {args.workers} "
          f"({threads} threads), jit {args.jit}; model-only: median of {args.rounds} epochs after {args.warmup} "
          f"warm-up steps; trainer rows: validate_every = checkpoint_every = k, seconds from one epoch end to "
          f"the next after the first k epochs\n", flush=True)
    table = Table()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        root = Path(args.data_dir or tmp)
        for size in args.sizes:
            rows += bench_size(table, size, args, root)
    return rows


if __name__ == "__main__":
    main()

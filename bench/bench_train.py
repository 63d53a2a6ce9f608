"""Training throughput: the trainer's real seconds per epoch (epoch ends included) beside the model-only rate.

    python bench/bench_train.py                                  # 256 and 512 px, width 1/8, small epochs (CPU)
    KERAS_BACKEND=jax python bench/bench_train.py --width 1.0 --batch 64 --steps 43 --every 1 5   # GPU

Rows per input size, printed (and flushed) as soon as each is measured:

- ``model-only``: ``model.fit`` on one pre-standardised batch already in memory, no augmentation, no epoch ends:
  the network's own rate, the ceiling (median of ``--rounds`` epochs, timed after ``--warmup`` steps);
- ``fit over the pipeline``: ``model.fit`` over the trainer's input pipeline exactly as ``train`` builds it
  (``trainer.training.input_pipeline``: images standardised once at load, ``data.workers`` threads, prefetch,
  augmentation where ``augment.placement = "auto"`` puts it), still without epoch ends;
- ``trainer, every k``: ``trainer.training.train.train`` itself on a synthetic folder (``trainer.synthetic``;
  throughput does not depend on the pixels) with ``validate_every = checkpoint_every = k``: seconds per epoch
  measured from one epoch end to the next, so validation, weights, checkpoint, history and TensorBoard are in
  it; the epochs before the first timed one (compilation, the first validation's tracing) are not timed, and the
  one-off costs of the session (loading, building, the plots at the end) are printed beside the table;

Every ratio is paired, so that a shared machine's changing load hits both sides alike: the pipeline rows
alternate with model-only epochs (``--rounds`` pairs, medians), and after every epoch of a trainer row one
model-only epoch is measured (outside the trainer's timing, with its input threads stopped); the trainer's
seconds over its timed epochs are compared with its twins' seconds.

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


def _epoch_clock(between=None):
    """A callback that stamps (wall, CPU) after every epoch end of ``train`` (it runs after the trainer's own
    epoch-end callback, so the time from one stamp to the next is a whole epoch as the trainer runs it). With
    ``between`` (a function returning a model-only (images/s, images/CPU-s)), the model-only rate is measured
    right after each epoch, outside the trainer's timing: each trainer epoch has its model-only twin measured
    under the same machine load (the pipeline's threads are stopped between epochs)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.periods: list[tuple[float, float]] = []  # per epoch (wall s, CPU s) from the previous stamp
            self.twins: list[tuple[float, float]] = []  # per epoch, the model-only rates measured after it
            self.first_end = 0.0

        def on_train_begin(self, logs=None):
            self._resume = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            now = (time.perf_counter(), time.process_time())
            self.first_end = self.first_end or now[0]
            self.periods.append((now[0] - self._resume[0], now[1] - self._resume[1]))
            if between is not None:
                self.twins.append(between())
            self._resume = (time.perf_counter(), time.process_time())

    return EpochClock()


def synthetic_folder(root: Path, images: int, size: int) -> Path:
    """A Kaggle-layout folder of ``images`` synthetic photographs for training at ``size`` px (reused when it exists).

    The photographs are at least the unit's minimum resolution high (device.preprocess.MIN_SIDE_PX): the loader
    refuses smaller ones, as the unit does, and crops the rest to ``size``.
    """
    from device.preprocess import MIN_SIDE_PX
    from trainer.synthetic import write_kaggle_folder

    folder = root / f"kaggle_{size}px_{images}"
    if not (folder / "trainLabels.csv").is_file():
        write_kaggle_folder(folder, n_patients=max(2, -(-images // 2)), size=max(size, MIN_SIDE_PX), seed=0)
    return folder


class Table:
    """Prints each row as soon as it is measured, with the model-only rate it is compared with."""

    def __init__(self):
        print(f"| size | {'variant':<32} | s/epoch | images/s | model-only images/s | ratio | images/CPU-s | "
              "model-only images/CPU-s | CPU ratio |", flush=True)
        print(f"|---:|{'-' * 34}|---:|---:|---:|---:|---:|---:|---:|", flush=True)

    @staticmethod
    def row(size: int, name: str, epoch_images: int, rate: tuple[float, float], ref: tuple[float, float]) -> dict:
        (wall, cpu), (wall0, cpu0) = rate, ref
        print(f"| {size} | {name:<32} | {epoch_images / wall:7.2f} | {wall:8.1f} | {wall0:8.1f} | "
              f"{wall / wall0:5.2f} | {cpu:8.1f} | {cpu0:8.1f} | {cpu / cpu0:5.2f} |", flush=True)
        return {"size": size, "variant": name, "seconds_per_epoch": epoch_images / wall, "images_per_s": wall,
                "model_only_images_per_s": wall0, "ratio": wall / wall0, "images_per_cpu_s": cpu,
                "model_only_images_per_cpu_s": cpu0, "cpu_ratio": cpu / cpu0}


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

    def model_only() -> tuple[float, float]:
        return _rates(plain, Fixed(), args.warmup, args.batch)

    def median(runs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

    runs = [model_only() for _ in range(args.rounds)]
    rows.append(table.row(size, "model-only", epoch_images, median(runs), median(runs)))
    pairs = [(_rates(model, pipeline, args.warmup, args.batch), model_only()) for _ in range(args.rounds)]
    rows.append(table.row(size, f"fit over the pipeline (aug {placement or 'off'})", epoch_images,
                          median([p for p, _ in pairs]), median([m for _, m in pairs])))
    notes = []
    for k in args.every:
        windows = max(1, -(-args.timed_epochs // k))
        epochs = k + windows * k  # untimed: epochs 1..k (compilation, the first validation's tracing)
        run_cfg = load_train_config("paper", overrides={**base, "epochs": epochs, "validate_every": k,
                                                         "checkpoint_every": k})
        with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
            clock, started = _epoch_clock(between=model_only), time.perf_counter()
            train(run_cfg, Path(tmp) / "run", verbose=0, callbacks=[clock], log=lambda line: None)
            ended = time.perf_counter()
            history = json.loads((Path(tmp) / "run" / "history.json").read_text())[k:]
        periods, twins = clock.periods[k:], clock.twins[k:]
        timed = len(periods)
        rate = tuple(epoch_images * timed / max(1e-9, sum(p[i] for p in periods)) for i in (0, 1))
        twin = tuple(epoch_images * timed / sum(epoch_images / t[i] for t in twins) for i in (0, 1))
        rows.append(table.row(size, f"trainer, every {k} ({timed} epochs)", epoch_images, rate, twin))
        in_fit = sum(h["train_seconds"] for h in history) / max(1e-9, sum(p[0] for p in periods))
        notes.append(f"every {k}: {100 * (1 - in_fit):.1f} % of the timed epochs' wall time outside the fit loop "
                     f"(validation, checkpoints, callbacks); {clock.first_end - started:.1f} s from the call to "
                     f"the end of epoch 1 (loading, building, compiling), {ended - clock._resume[0]:.1f} s after "
                     "the last epoch (final writes, plots, summary)")
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

"""``python -m trainer train``: train the CAM network with the paper's recipe (or a preset), resumable.

Usage::

    from trainer.training.train import train, load_run_model
    from trainer.training.config import load_train_config

    summary = train(load_train_config("paper", overrides=["input_size=256", "width=0.25"]), "runs/paper256")
    model = load_run_model("runs/paper256")       # best epoch, {"probs", "cam"} outputs, float32

The run folder layout is documented in :mod:`trainer.training.run_folder` and docs/training.md.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from device.errors import ConfigError
from device.model.card import CAM_STRIDE
from trainer import module_available
from trainer.model import build_network
from trainer.training.augment import FundusAugment
from trainer.training.callbacks import BEST_WEIGHTS, LAST_WEIGHTS, EpochEnd, predict_referable
from trainer.training.checkpoint import TrainingCheckpoint
from trainer.training.config import TrainConfig, load_train_config
from trainer.training.distribute import setup_runtime
from trainer.training.input_pipeline import BatchSequence, class_weights, load_images
from trainer.training.run_folder import RunFolder

CONFIG_NAME = "config.json"
# Fields that may change when a run is resumed (``--resume RUN --set time_budget_minutes=90``): they decide how
# long and how the run goes on, not what a finished epoch computed.
RESUME_FIELDS = ("epochs", "time_budget_minutes", "validate_every", "checkpoint_every", "data.workers",
                 "data.preload")


class TrainingModel(keras.Model):
    """Augmentation (training only) followed by the CAM network; returns the class probabilities.

    Args:
        cam_model: the inference model from :func:`trainer.model.build_cam_model`.
        augment: the augmentation layer, or None.
    """

    def __init__(self, cam_model: keras.Model, augment: keras.layers.Layer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cam_model = cam_model
        self.augment = augment

    def build(self, input_shape):
        if self.augment is not None:
            self.augment.build(input_shape)
        self.cam_model.build(input_shape)
        self.built = True

    def call(self, images, training=False):
        if training and self.augment is not None:
            images = self.augment(images, training=True)
        return self.cam_model(images, training=training)["probs"]


def _lr_schedule(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    # DESIGN.md §2.2: lr decayed 1 % per epoch; keyed on the optimiser's iteration counter, so it resumes exactly.
    return keras.optimizers.schedules.ExponentialDecay(
        cfg.optimizer.learning_rate, decay_steps=steps_per_epoch, decay_rate=1.0 - cfg.optimizer.decay_per_epoch,
        staircase=True)


def _jit(cfg: TrainConfig, backend: str, accelerator: str) -> bool:
    # "auto": always on JAX (off = op-by-op dispatch, ~10x slower); on TensorFlow only with an accelerator, since
    # XLA on CPU measured 2x slower than TF's own kernels (2.7 vs 5.9 s/step, 256 px, width 1/8, batch 32).
    if cfg.jit_compile != "auto":
        return cfg.jit_compile == "on"
    return backend == "jax" or accelerator != "cpu"


def augment_placement(cfg: TrainConfig, accelerator: str) -> str | None:
    """Where augmentation runs: ``"device"``, ``"pipeline"`` or None (disabled); see :mod:`trainer.training.augment`."""
    if not cfg.augment.enabled:
        return None
    if cfg.augment.placement != "auto":
        return cfg.augment.placement
    return "pipeline" if accelerator == "cpu" else "device"


def _augment_kwargs(cfg: TrainConfig) -> dict:
    aug = cfg.augment
    return dict(brightness=aug.brightness, contrast=aug.contrast, rotation_deg=aug.rotation_deg, hflip=aug.hflip,
                vflip=aug.vflip)


def build_training(cfg: TrainConfig, steps_per_epoch: int,
                   accelerator: str = "cpu") -> tuple[TrainingModel, keras.Model]:
    """Build and compile the training model (call inside the runtime's scope; ``accelerator`` from the runtime)."""
    keras.utils.set_random_seed(cfg.seed)
    cam_model = build_network(cfg.backbone, cfg.input_size, cfg.width, cfg.l2, cfg.freeze_blocks, cfg.backbone_bn)
    on_device = augment_placement(cfg, accelerator) == "device"
    augment = FundusAugment(**_augment_kwargs(cfg), seed=cfg.seed, dtype="float32", name="augment") \
        if on_device else None
    model = TrainingModel(cam_model, augment, name="training_model")
    optimizer = keras.optimizers.SGD(_lr_schedule(cfg, steps_per_epoch), momentum=cfg.optimizer.momentum,
                                     nesterov=cfg.optimizer.nesterov)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"], jit_compile=_jit(cfg, keras.backend.backend(), accelerator))
    model.build((None, cfg.input_size, cfg.input_size, 3))  # create the variables without running the graph
    return model, cam_model


def _without_resume_fields(cfg: TrainConfig) -> dict:
    tree = json.loads(cfg.model_dump_json())
    for dotted in RESUME_FIELDS:
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node[key]
        node.pop(leaf)
    return tree


def _prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool) -> RunFolder:
    checkpoint = TrainingCheckpoint(run_dir)
    run = RunFolder(run_dir)
    if resume:
        if not checkpoint.exists():
            raise ConfigError(f"There is no checkpoint in {run_dir} to resume from; start the run without --resume.")
        frozen = load_run_config(run_dir)  # fields added since the run started take their defaults
        if _without_resume_fields(frozen) != _without_resume_fields(cfg):
            raise ConfigError(f"The config differs from the one {run_dir} was started with; resume with "
                              f"--resume {run_dir} alone (its config.json is used), changing at most "
                              f"{', '.join(RESUME_FIELDS)} with --set.")
        if frozen != cfg:
            run.write_json(CONFIG_NAME, json.loads(cfg.model_dump_json()))
    elif checkpoint.exists():
        raise ConfigError(f"The run folder {run_dir} already holds a run; pass --resume to continue it or choose "
                          "another run folder.")
    else:
        run.write_json(CONFIG_NAME, json.loads(cfg.model_dump_json()))
    return run


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, verbose: int | str = "auto",
          callbacks: list[keras.callbacks.Callback] | None = None,
          log: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) one run and write its run folder.

    Args:
        cfg: validated config (see :mod:`trainer.training.config`).
        run_dir: the run folder (created; must not hold another run unless ``resume``).
        resume: continue from ``run_dir/checkpoint.npz`` (epoch, optimiser state, schedule, RNG, history); ``cfg``
            may differ from the run's config only in ``RESUME_FIELDS`` (a larger time budget continues a run the
            budget stopped).
        verbose: Keras progress: ``"auto"`` = bar with ETA on a terminal, nothing else (the per-epoch line stays).
        callbacks: extra Keras callbacks (appended after the run's own).
        log: where the per-epoch lines go (default: stdout, flushed).

    Returns:
        The run summary (also written to ``run_dir/summary.json``).

    Raises:
        ConfigError: bad data folder/cache, run folder conflicts, device setup impossible.
    """
    started = time.monotonic()  # the time budget counts from here: loading, compiling and epoch ends included
    log = log or (lambda line: print(line, flush=True))
    run_dir = Path(run_dir)
    run = _prepare_run_dir(cfg, run_dir, resume)
    runtime = setup_runtime(cfg)
    images = load_images(cfg.data, cfg.input_size, preload=True)
    data_summary = images.summary()
    run.write_json("data.json", data_summary)
    run.write_version(runtime.backend, runtime.devices, {"dtype_policy": runtime.dtype_policy,
                                                         "data_parallel": runtime.data_parallel})
    train_idx, val_idx = images.indices("train"), images.indices("val")
    weights = class_weights(images.labels[train_idx], cfg.class_weight)
    workers = cfg.data.worker_threads()
    placement = augment_placement(cfg, runtime.accelerator)
    train_seq = BatchSequence(images, train_idx, cfg.batch_size, cfg.data.normalisation, weights,
                              shuffle_seed=cfg.seed, workers=workers,
                              augment=_augment_kwargs(cfg) if placement == "pipeline" else None, endless=True)
    val_seqs = [BatchSequence(images, val_idx, cfg.batch_size, cfg.data.normalisation, workers=workers,
                              hflip=flip) for flip in ((False, True) if cfg.tta_flip else (False,))]
    steps = len(train_seq)
    with runtime.scope:
        model, cam_model = build_training(cfg, steps, runtime.accelerator)
        state = {"epochs_done": 0, "history": [], "best_auc": -1.0, "best_epoch": 0}
        if resume:
            state = TrainingCheckpoint(run_dir).restore(model, model.optimizer)
            log(f"resuming {run_dir} after epoch {state['epochs_done']} (optimizer step "
                f"{int(np.asarray(model.optimizer.iterations.numpy()))})")
    train_seq.set_epoch(state["epochs_done"])
    schedule = _lr_schedule(cfg, steps)
    budget_s = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
    if state["epochs_done"]:  # resumed: train on if one more epoch fits the (maybe new) budget
        needed = state.get("budget_needed_s") if state.get("stopped_by_time_budget") else None
        needed = needed or state.get("wall_seconds", 0.0) + state.get("expected_epoch_s", 0.0)
        state["stopped_by_time_budget"] = budget_s is not None and needed > budget_s
    if state.get("stopped_by_time_budget"):
        log(f"the time budget of {cfg.time_budget_minutes} min is spent ({state.get('wall_seconds', 0.0) / 60:.1f} "
            f"min used); resume with --set time_budget_minutes=... to train on")
    epoch_end = EpochEnd(run, cam_model, val_seqs, images.labels[val_idx], images.ids[val_idx], state,
                         lambda e: float(np.asarray(schedule(e * steps))), cfg.epochs, cfg.early_stopping_patience,
                         log, time_budget_s=budget_s, validate_every=cfg.validate_every,
                         checkpoint_every=cfg.checkpoint_every, session_start=started)
    own = [epoch_end]
    if all(module_available(m) for m in ("tensorflow", "tensorboard")):
        own.append(keras.callbacks.TensorBoard(log_dir=str(run.tensorboard_dir), write_graph=False,
                                               update_freq="epoch"))
    else:
        log("TensorBoard logs skipped: install tensorflow and tensorboard (pip install -e .[train]) to get them")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0
    log(f"training {cfg.name}: {len(train_idx)} train / {len(val_idx)} val images at {cfg.input_size} px, "
        f"width {cfg.width}, {steps} steps/epoch, backend {runtime.backend} on {', '.join(runtime.devices)}, "
        f"{runtime.dtype_policy}, augmentation: {placement or 'off'}")
    if state["epochs_done"] < cfg.epochs and not state.get("stopped_early") and not state.get("stopped_by_time_budget"):
        # One endless stream (BatchSequence(endless=True)): the next epoch's batches are made during the epoch end.
        model.fit(train_seq, epochs=cfg.epochs, initial_epoch=state["epochs_done"], steps_per_epoch=steps,
                  shuffle=False, verbose=verbose, callbacks=own + list(callbacks or []))
    return _write_summary(run, cfg, state, data_summary, runtime, time.monotonic() - started)


def _write_summary(run: RunFolder, cfg: TrainConfig, state: dict, data: dict, runtime, wall: float) -> dict:
    finite = [h for h in state["history"] if np.isfinite(h["val_auc"])]
    summary = {
        "name": cfg.name, "best_val_auc": state["best_auc"], "best_epoch": state["best_epoch"],
        "epochs_done": state["epochs_done"], "epochs_planned": cfg.epochs,
        "stopped_early": bool(state.get("stopped_early", False)),
        "stopped_by_time_budget": bool(state.get("stopped_by_time_budget", False)),
        "last_val_auc": finite[-1]["val_auc"] if finite else None,
        "train_seconds": round(state.get("train_seconds", 0.0), 1), "wall_seconds_this_session": round(wall, 1),
        "wall_seconds": round(state.get("wall_seconds", 0.0), 1),
        "input_size": cfg.input_size, "width": cfg.width, "normalisation": cfg.data.normalisation,
        "tta_flip": cfg.tta_flip, "backend": runtime.backend, "devices": runtime.devices,
        "backbone": cfg.backbone, "data": {k: data[k] for k in ("source", "train", "val", "sources") if k in data},
        "val_roc": state.get("best_roc"), "best_weights": BEST_WEIGHTS, "last_weights": LAST_WEIGHTS,
    }
    run.write_json("summary.json", summary)
    return summary


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The frozen config of a run folder."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {CONFIG_NAME}); give the folder `train` wrote.")
    return load_train_config(preset=None, path=path)


def load_run_model(run_dir: str | Path, which: str = "best", output_stride: int = CAM_STRIDE) -> keras.Model:
    """Rebuild a run's CAM model (float32) and load its ``best`` or ``last`` weights.

    ``output_stride`` 8 rebuilds a Lite0 run one stage finer around the same weights (``bench/lite0_stride.py``).

    Returns:
        The model of :func:`trainer.model.build_network` with outputs ``{"probs", "cam"}``.

    Raises:
        ConfigError: not a run folder, or no weights of that kind yet.
    """
    cfg = load_run_config(run_dir)
    weights = Path(run_dir) / {"best": BEST_WEIGHTS, "last": LAST_WEIGHTS}[which]
    if not weights.is_file():
        raise ConfigError(f"{run_dir} has no {weights.name} yet; wait for the first epoch to finish.")
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build_network(cfg.backbone, cfg.input_size, cfg.width, cfg.l2, cfg.freeze_blocks, cfg.backbone_bn,
                              pretrained=False, output_stride=output_stride)  # the run's own weights replace them
    finally:
        keras.config.set_dtype_policy(policy)
    model.load_weights(weights)
    return model


def validate_run(run_dir: str | Path, which: str = "best", tta_flip: bool | None = None) -> dict:
    """Validation AUC of a run's model on its own validation split, optionally with flip test-time augmentation.

    Args:
        run_dir: the run folder.
        which: ``best`` or ``last`` weights.
        tta_flip: average the image and its horizontal flip; None = as the run's config says.

    Returns:
        ``{"auc", "auc_ci95", "images", "referable", "tta_flip", "which", "by_source"}``; ``by_source`` holds the
        AUC and its bootstrap 95 % interval of each source of a mixed data set (empty otherwise).
    """
    from sklearn.metrics import roc_auc_score

    cfg = load_run_config(run_dir)
    model = load_run_model(run_dir, which)
    tta = cfg.tta_flip if tta_flip is None else tta_flip
    images = load_images(cfg.data, cfg.input_size)  # per batch: only the validation split is read
    val = images.indices("val")
    threads = cfg.data.worker_threads()
    seqs = [BatchSequence(images, val, cfg.batch_size, cfg.data.normalisation, workers=threads, hflip=f)
            for f in ((False, True) if tta else (False,))]
    labels = images.labels[val]
    probs = predict_referable(model, seqs)
    from trainer.training.sources import auc_with_ci, per_source_auc

    names = getattr(images, "source_names", None)
    return {"auc": float(roc_auc_score(labels, probs)), "auc_ci95": auc_with_ci(labels, probs)["auc_ci95"],
            "images": int(val.size), "referable": int(labels.sum()), "tta_flip": bool(tta), "which": which,
            "by_source": per_source_auc(labels, probs, names[val] if names is not None else None)}

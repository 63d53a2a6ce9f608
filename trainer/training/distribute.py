"""Devices, data-parallel training and mixed precision for the TensorFlow and JAX backends.

- JAX: ``keras.distribution.DataParallel`` over the chosen devices (batches are sharded, weights replicated).
- TensorFlow: ``tf.distribute.MirroredStrategy``; the model and optimiser are built inside its scope.
- Without GPUs, ``data_parallel`` runs on CPU devices: JAX's from ``XLA_FLAGS=--xla_force_host_platform_device_count
  =N``; TensorFlow's by splitting the CPU into N logical devices (must happen before TensorFlow starts, so call
  :func:`setup_runtime` first thing). This is how the data-parallel path is tested on a CPU-only machine.
- Mixed precision (``auto``: on GPUs only): ``mixed_float16`` on TensorFlow (Keras adds loss scaling),
  ``mixed_bfloat16`` on JAX (DESIGN.md §5 anchors).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import keras

from device.errors import ConfigError
from trainer.training.config import TrainConfig


@dataclass
class Runtime:
    """What :func:`setup_runtime` chose.

    Attributes:
        backend: ``tensorflow`` or ``jax``.
        devices: the devices training runs on.
        accelerator: ``gpu``/``tpu`` or ``cpu``.
        data_parallel: whether the batch is split across ``devices``.
        dtype_policy: Keras dtype policy name.
        scope: context manager to build the model/optimiser in (the TF strategy scope, or a no-op).
    """

    backend: str
    devices: list[str]
    accelerator: str
    data_parallel: bool
    dtype_policy: str
    scope: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)


def _tf_devices(wanted: int | None, data_parallel: bool) -> tuple[list[str], str]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return [f"/gpu:{i}" for i in range(len(gpus))][: wanted or len(gpus)], "gpu"
    n = wanted or 1
    if data_parallel and n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError:
            pass  # already initialised: use whatever logical CPUs exist
        logical = tf.config.list_logical_devices("CPU")
        if len(logical) < n:
            raise ConfigError(f"TensorFlow has already started with {len(logical)} CPU device(s), so num_devices={n} "
                              "cannot be set up; start a fresh process (python -m trainer train).")
        return [f"/cpu:{i}" for i in range(n)], "cpu"
    return ["/cpu:0"], "cpu"


def _jax_devices(wanted: int | None) -> tuple[list[str], str]:
    import jax

    devices = jax.devices()
    kind = devices[0].platform
    n = wanted or len(devices)
    if n > len(devices):
        raise ConfigError(f"num_devices={n} but JAX sees only {len(devices)} {kind} device(s); lower num_devices "
                          "(on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N).")
    return [f"{kind}:{d.id}" for d in devices[:n]], kind


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Choose devices, distribution and dtype policy for ``cfg`` (call before building any model).

    Raises:
        ConfigError: more devices requested than available, or a batch that does not split evenly.
    """
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ConfigError(f"The Keras backend '{backend}' is not supported for training; set KERAS_BACKEND to "
                          "tensorflow or jax.")
    want_dp = cfg.distribution == "data_parallel"
    if backend == "jax":
        devices, kind = _jax_devices(cfg.num_devices if want_dp or cfg.num_devices else None)
    else:
        devices, kind = _tf_devices(cfg.num_devices, want_dp)
    accelerator = "cpu" if kind == "cpu" else kind
    if cfg.distribution == "auto":
        data_parallel = accelerator != "cpu" and len(devices) > 1
    else:
        data_parallel = want_dp and len(devices) > 1
    if not data_parallel:
        devices = devices[:1]
    if data_parallel and cfg.batch_size % len(devices):
        raise ConfigError(f"batch_size {cfg.batch_size} does not split over {len(devices)} devices; make it a "
                          f"multiple of {len(devices)}.")
    mixed = cfg.mixed_precision == "on" or (cfg.mixed_precision == "auto" and accelerator != "cpu")
    policy = ("mixed_bfloat16" if backend == "jax" else "mixed_float16") if mixed else "float32"
    keras.config.set_dtype_policy(policy)
    scope: contextlib.AbstractContextManager = contextlib.nullcontext()
    if data_parallel and backend == "jax":
        jax_devices = keras.distribution.list_devices()[: len(devices)]
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax_devices))
    elif data_parallel:
        import tensorflow as tf

        scope = tf.distribute.MirroredStrategy(devices).scope()
    return Runtime(backend=backend, devices=devices, accelerator=accelerator, data_parallel=data_parallel,
                   dtype_policy=policy, scope=scope)

"""Per-epoch training checkpoint: every model and optimiser variable plus the run state, in one atomic file.

``checkpoint.npz`` holds the values of ``model.variables`` (weights, batch-norm statistics, the augmentation's
random state) and ``optimizer.variables`` (iteration counter, which drives the learning-rate schedule, and the
momentum buffers), in order, plus a JSON state (epochs done, best AUC, history). It is written to a temporary
file, fsynced and renamed, so a SIGKILL at any moment leaves either the previous or the new checkpoint. Works
under the TensorFlow and JAX backends and under ``tf.distribute``/``keras.distribution``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from device.atomic import write_atomic
from device.errors import ConfigError

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT_VERSION = 1


class TrainingCheckpoint:
    """Save and restore the full training state of a run folder.

    Args:
        run_dir: the run folder; the checkpoint is ``run_dir/checkpoint.npz``.

    Example::

        ckpt = TrainingCheckpoint(run_dir)
        ckpt.save(model, optimizer, {"epochs_done": 3})
        state = ckpt.restore(model, optimizer)      # -> {"epochs_done": 3}
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / CHECKPOINT_NAME

    def exists(self) -> bool:
        """Whether a checkpoint has been written."""
        return self.path.is_file()

    @staticmethod
    def _variables(model, optimizer) -> list:
        return list(model.variables) + list(optimizer.variables)

    def save(self, model, optimizer, state: dict) -> None:
        """Write all variables and ``state`` (JSON-serialisable) atomically."""
        self.write(self.snapshot(model, optimizer, state))

    def snapshot(self, model, optimizer, state: dict) -> dict[str, np.ndarray]:
        """Copies of every variable and of ``state`` now, for :meth:`write` (in another thread while training goes
        on: later steps do not change the copies)."""
        variables = self._variables(model, optimizer)
        arrays = {f"v{i:05d}": np.array(v.numpy() if hasattr(v, "numpy") else v, copy=True)
                  for i, v in enumerate(variables)}
        meta = {"format": FORMAT_VERSION, "paths": [v.path for v in variables], "state": state}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        return arrays

    def write(self, snapshot: dict[str, np.ndarray]) -> None:
        """Write a :meth:`snapshot` atomically (temporary file, fsync, rename)."""
        buffer = io.BytesIO()
        np.savez(buffer, **snapshot)
        write_atomic(self.path, buffer.getvalue())

    def read_state(self) -> dict:
        """The JSON state of the checkpoint without touching any model."""
        with np.load(self.path) as data:
            return json.loads(data["meta"].tobytes().decode("utf-8"))["state"]

    def restore(self, model, optimizer) -> dict:
        """Assign the saved values to ``model`` and ``optimizer`` (built first if needed) and return the state.

        Raises:
            ConfigError: the checkpoint does not match the model/optimiser built from the run's config.
        """
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        variables = self._variables(model, optimizer)
        with np.load(self.path) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            if len(meta["paths"]) != len(variables):
                raise ConfigError(
                    f"The checkpoint {self.path} has {len(meta['paths'])} variables but the model built from the "
                    f"run's config has {len(variables)}; resume with the config the run was started with.")
            for i, variable in enumerate(variables):
                value = data[f"v{i:05d}"]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ConfigError(
                        f"The checkpoint {self.path} stores {meta['paths'][i]} with shape {value.shape}, not "
                        f"{tuple(variable.shape)}; resume with the config the run was started with.")
                variable.assign(value)
        return meta["state"]

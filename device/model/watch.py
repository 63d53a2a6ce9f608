"""Between patients, the kiosk asks whether the store's ``ACTIVE`` pointer names another model, and loads it.

Reading the pointer is one small file read per patient. A new model is checked exactly as at start-up (signature,
unit version, card, sha256, self-test); if it fails, the kiosk keeps its model and says why — once per pointer
change, so a lasting fault never spins. A kiosk started on a fixed bundle (``--model DIR``) only says that a
restart is needed.

    watch = ActiveModelWatch(cfg.model)            # snapshot the pointer before the first model is loaded
    change = watch.poll()                           # None, or ModelChange(model_id, model | None, problem)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from device.errors import ModelError
from device.model.active import parse_pointer, read_pointer_bytes
from device.model.bundle import BundleModelConfig, ModelBundle, open_checked_bundle

UNSIGNED_NOTICE = "UNSIGNED MODEL (development)"


@dataclass(frozen=True)
class ModelChange:
    """The pointer names another model: loaded (``model``), or not, with the sentence saying why (``problem``)."""

    model_id: str
    model: ModelBundle | None
    problem: str | None


class ActiveModelWatch:
    """Notices a change of the store's ACTIVE pointer (see the module docstring).

    Args:
        cfg: the unit's bundle config (with ``store``).
        fixed: the kiosk runs a bundle given on the command line: report a needed restart instead of loading.
    """

    def __init__(self, cfg: BundleModelConfig, fixed: bool = False) -> None:
        if not cfg.store:
            raise ValueError("ActiveModelWatch needs a config with a model store")
        self.cfg, self.fixed, self.store = cfg, fixed, Path(cfg.store)
        self._seen: bytes | None = None
        self._seen = self._read()

    def _read(self) -> bytes | None:
        try:
            return read_pointer_bytes(self.store)
        except ModelError:  # an unreadable disk: keep the running model; the next poll tries again
            return self._seen

    def poll(self) -> ModelChange | None:
        """Has the pointer changed since the last call (or since the start)?

        Returns:
            None when it has not; else the :class:`ModelChange` (reported once per change).
        """
        data = self._read()
        if data == self._seen or data is None:
            return None
        self._seen = data
        try:
            pointer = parse_pointer(data, self.store)
        except ModelError as exc:
            return ModelChange("?", None, str(exc))
        if self.fixed:
            return ModelChange(pointer.active, None, f"The model {pointer.active} was made active on this unit; "
                                                     "restart the unit to use it (this session runs the model given "
                                                     "at start-up).")
        try:
            return ModelChange(pointer.active, open_checked_bundle(self.store / pointer.active, self.cfg), None)
        except ModelError as exc:
            return ModelChange(pointer.active, None, f"The new model {pointer.active} was not taken into use: {exc}")


def unsigned_notice(model: object) -> str | None:
    """The on-screen notice for a bundle running under the development override (None when signed or a fake)."""
    if isinstance(model, ModelBundle) and model.signature is not None and not model.signature.trusted:
        return UNSIGNED_NOTICE
    return None

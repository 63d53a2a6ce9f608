"""One table from a config's ``type`` to its config class and implementation, for every kind of hardware/runtime.

Both the config union (a field of the program's config) and the factory come from the table, so adding an
implementation is one row:

    CAMERAS = ConfigTable({"folder": (FolderCameraConfig, FolderCamera), "fake": (FakeCameraConfig, FakeCamera)})
    CameraConfig = CAMERAS.union                 # pydantic: discriminated on "type", unknown types rejected
    camera = CAMERAS.open({"type": "fake"})      # FakeCamera.from_config(FakeCameraConfig())
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter


class ConfigTable:
    """``type`` -> (config class, implementation with a ``from_config(cfg, *args)`` classmethod).

    Args:
        rows: the table; each config class has ``type: Literal["<its key>"]``.
    """

    def __init__(self, rows: dict[str, tuple[type[BaseModel], Any]]) -> None:
        self.rows = dict(rows)
        self.configs = tuple(config for config, _ in self.rows.values())
        self.union = Annotated[Union[self.configs], Field(discriminator="type")]  # noqa: UP007 - built from the rows
        self._adapter: TypeAdapter = TypeAdapter(self.union)

    @property
    def tags(self) -> tuple[str, ...]:
        """The ``type`` values, in table order."""
        return tuple(self.rows)

    def validate(self, cfg: object) -> BaseModel:
        """A config object of the table, as given, or validated from a mapping (``pydantic.ValidationError``)."""
        return cfg if isinstance(cfg, self.configs) else self._adapter.validate_python(cfg)

    def open(self, cfg: object, *args: Any) -> Any:
        """Validate ``cfg`` and build its implementation (``from_config(cfg, *args)``)."""
        cfg = self.validate(cfg)
        return self.rows[cfg.type][1].from_config(cfg, *args)

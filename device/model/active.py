"""The model store's ``ACTIVE`` pointer: which installed bundle the unit runs, and which one rollback returns to.

``<store>/ACTIVE`` is a small JSON file replaced atomically (temporary file, fsync, rename, fsync of the folder:
:func:`device.atomic.write_atomic`), so after a power cut or SIGKILL it names either the old or the new model,
never neither::

    {"format": "dr-cam-active-model", "version": 1, "active": "<bundle id>", "previous": "<bundle id>" | null,
     "changed_at": "2026-12-01T10:00:00.000+00:00", "reason": "install" | "activate" | "rollback"}

No ``ACTIVE`` file (a new store) means the unit runs the bundled default model (``models/DEFAULT``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device.atomic import FileTooLargeError, SpecialFileError, read_regular, write_atomic
from device.errors import ModelError

ACTIVE_FILE = "ACTIVE"
MAX_POINTER_BYTES = 4096
BUNDLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"  # as device.model.card.ModelCard.id: a folder name


class ActivePointer(BaseModel):
    """The content of ``ACTIVE``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["dr-cam-active-model"] = "dr-cam-active-model"
    version: Literal[1] = 1
    active: str = Field(pattern=BUNDLE_ID_PATTERN, description="id (folder name) of the model the unit runs")
    previous: str | None = Field(None, pattern=BUNDLE_ID_PATTERN, description="what rollback returns to")
    changed_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    reason: Literal["install", "activate", "rollback", "remove"] = "activate"


def read_pointer_bytes(store: str | Path) -> bytes | None:
    """The raw bytes of ``ACTIVE`` (to notice a change cheaply), or None when there is none."""
    try:
        return read_regular(Path(store) / ACTIVE_FILE, MAX_POINTER_BYTES)
    except FileNotFoundError:
        return None
    except FileTooLargeError:
        return b"\0" * (MAX_POINTER_BYTES + 1)  # parse_pointer calls it damaged, with what to do
    except SpecialFileError as exc:
        raise ModelError(f"The active-model pointer {Path(store) / ACTIVE_FILE} is {exc.kind}, not a file; remove "
                         "it and activate a model again with `python -m device model activate`.") from None
    except OSError as exc:
        raise ModelError(f"The active-model pointer {Path(store) / ACTIVE_FILE} cannot be read ({exc.strerror}); "
                         "check the unit's disk.") from None


def parse_pointer(data: bytes | None, store: str | Path) -> ActivePointer | None:
    """Parse the bytes of ``ACTIVE`` (None stays None).

    Raises:
        ModelError: the file is damaged (one sentence saying how to repair it).
    """
    if data is None:
        return None
    try:
        if len(data) > MAX_POINTER_BYTES:
            raise ValueError("too large")
        return ActivePointer.model_validate_json(data)
    except (ValidationError, ValueError):
        raise ModelError(f"The active-model pointer {Path(store) / ACTIVE_FILE} is damaged; choose the model again "
                         "with `python -m device model activate ID` (`model list` shows the ids).") from None


def read_active(store: str | Path) -> ActivePointer | None:
    """The store's pointer, or None when no model was ever activated there.

    Raises:
        ModelError: the pointer cannot be read or is damaged.
    """
    return parse_pointer(read_pointer_bytes(store), store)


def write_active(store: str | Path, pointer: ActivePointer) -> Path:
    """Replace ``ACTIVE`` atomically (fsync of the file and of the store folder)."""
    return write_atomic(Path(store) / ACTIVE_FILE, (pointer.model_dump_json(indent=1) + "\n").encode())

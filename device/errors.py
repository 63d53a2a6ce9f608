"""Typed errors whose message is one sentence a person can act on.

Every error the unit can show on its screen derives from :class:`ScreeningError`; ``str(error)`` is the
sentence to show (what is wrong and what to do), never a traceback.
"""

from __future__ import annotations

import errno


def subject(label: str) -> str:
    """How a sentence about an image starts: a phrase ("the photograph") gets a capital letter, a file name is
    kept exactly as it is ("Tiny32.jpg" must not become "tiny32.jpg" or the reverse): "The photograph tiny32.jpg"."""
    if label.lower().startswith(("the ", "a ", "an ")):
        return label[:1].upper() + label[1:]
    return f"The photograph {label}"


class ScreeningError(Exception):
    """Base class: ``str(self)`` is one sentence saying what is wrong and what to do."""


class ImageError(ScreeningError, ValueError):
    """An input photograph cannot be used."""


class ImageReadError(ImageError):
    """The file is missing, empty, truncated, corrupt or not an image."""


class ImageTooSmallError(ImageError):
    """The photograph is smaller than the minimum size."""


class BlankImageError(ImageError):
    """The photograph is (almost) uniformly black or flat."""


class NotFundusError(ImageError):
    """No circular retinal field of view was found in the photograph."""


class ModelError(ScreeningError):
    """A model bundle is missing, tampered with, or does not match its card."""


class ConfigError(ScreeningError, ValueError):
    """A configuration file is missing or invalid."""


class HardwareError(ScreeningError):
    """A camera, display, disk or microcontroller is unavailable."""


class StorageError(HardwareError):
    """The records could not be written (full disk, locked database, read-only or failing storage).

    Attributes:
        kind: ``disk_full``, ``locked``, ``read_only`` or ``io`` (:func:`storage_fault`).
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


# errno values that mean "no room left": the disk itself, or the user's quota on it.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def storage_fault(exc: BaseException) -> str:
    """What kind of storage fault an OSError or sqlite3 error is: ``disk_full``, ``locked``, ``read_only`` or
    ``io`` (anything else), from its errno or SQLite's result code and message (SQLITE_FULL "database or disk is
    full", SQLITE_BUSY/LOCKED "database is locked", SQLITE_READONLY "attempt to write a readonly database")."""
    if isinstance(exc, StorageError):
        return exc.kind
    number = getattr(exc, "errno", None)
    if isinstance(exc, OSError) and number in DISK_FULL_ERRNOS:
        return "disk_full"
    if isinstance(exc, OSError) and number in READ_ONLY_ERRNOS:
        return "read_only"
    code = (getattr(exc, "sqlite_errorname", None) or "").upper()
    text = str(exc).lower()
    if code.startswith("SQLITE_FULL") or "disk is full" in text or "no space left" in text:
        return "disk_full"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "is locked" in text:
        return "locked"
    if code.startswith("SQLITE_READONLY") or "readonly database" in text or "read-only file system" in text:
        return "read_only"
    return "io"


def not_saved_message(exc: BaseException, what: str = "the record", then: str = "press the button to go on") -> str:
    """The one sentence a nurse reads when something could not be recorded, naming the fault and what to do.

    Args:
        exc: the OSError, sqlite3 error or :class:`StorageError`.
        what: what was not recorded, e.g. "this photograph's record".
        then: the last step once the fault is fixed.
    """
    kind = storage_fault(exc)
    if kind == "disk_full":
        return (f"NOT SAVED — the unit's disk is full: {what} was not recorded; export and remove old sessions to "
                f"free space, then {then}.")
    if kind == "locked":
        return (f"NOT SAVED — the records database is locked by another program: {what} was not recorded; close "
                f"that program (a copy or backup of the records folder), then {then}.")
    if kind == "read_only":
        return (f"NOT SAVED — the records disk cannot be written (read-only or no permission): {what} was not "
                f"recorded; check the storage card and the folder's owner, then {then}.")
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return (f"NOT SAVED — the records disk failed ({detail}): {what} was not recorded; check the storage card, then "
            f"{then}.")

"""Bringing a model bundle onto the unit: from a folder, a ``.tar`` file or a USB stick, safely and within limits.

A bundle travels as its folder or as a tar of it (``trainer sign BUNDLE --tar OUT.tar`` writes one: the files under
``<id>/``). Extraction never trusts the archive: absolute names, ``..``, links, devices, FIFOs, sub-folders,
duplicate names, more than ``MAX_FILES`` files or more than ``MAX_BUNDLE_BYTES`` in all are refused with one
sentence; a truncated or corrupt tar is refused; hidden files (``.DS_Store``, ``._model.json`` that macOS leaves on
USB sticks) are skipped. Files are streamed into a staging folder (never ``extractall``) and fsynced; the caller
verifies the signature there and renames the folder into place.

    source = find_bundle_source("/media/usb")      # the one bundle folder or .tar on a stick
    nbytes = stage_bundle(source, staging)          # staging: a new, empty folder
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

from device.errors import ModelError
from device.model.card import CARD_FILE
from device.model.signature import MAX_FILES

# The largest bundle accepted: the paper's network at 512 px is 20 MB as float16 (docs/export.md); 512 MiB leaves
# room for bigger networks and bounds what a hostile archive can write.
MAX_BUNDLE_BYTES = 512 << 20
CHUNK = 1 << 20
END_MARKER = 2 * tarfile.BLOCKSIZE  # two zero blocks end every tar (POSIX ustar)
TAR_SUFFIX = ".tar"  # uncompressed only: its size bounds its content, and no decompression bomb is possible
FILE_MODE = 0o644


class ArchiveError(ModelError):
    """A bundle folder or archive cannot be brought onto the unit (unsafe, corrupt, truncated or too large)."""


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (the one place staged bytes hit the disk; tests inject ENOSPC here)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def is_tar(path: Path) -> bool:
    """True for a ``.tar`` file name."""
    return path.name.lower().endswith(TAR_SUFFIX)


def find_bundle_source(path: str | Path) -> Path:
    """The bundle to install from a path: a bundle folder, a tar file, or a folder (a USB stick) holding one.

    Raises:
        ArchiveError: nothing, or more than one bundle, is there.
    """
    path = Path(path)
    if path.is_file() and is_tar(path):
        return path
    if not path.is_dir():
        raise ArchiveError(f"{path} is neither a model bundle folder nor a .tar file; check the path (on a USB stick: "
                           "the folder or .tar that `trainer sign` wrote).")
    if (path / CARD_FILE).is_file():
        return path
    found = sorted(p for p in path.iterdir() if not p.name.startswith(".") and not p.is_symlink()
                   and ((p.is_dir() and (p / CARD_FILE).is_file()) or (p.is_file() and is_tar(p))))
    if not found:
        raise ArchiveError(f"No model bundle was found in {path} (a folder with {CARD_FILE} or a .tar file); copy "
                           "one there or give its path.")
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4])
        raise ArchiveError(f"{path} holds several bundles ({names}); give the path of the one to install.")
    return found[0]


def _new_file(staging: Path, name: str) -> int:
    return os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)


def _budget(total: int, more: int, source: Path) -> int:
    if total + more > MAX_BUNDLE_BYTES:
        raise ArchiveError(f"The bundle {source} is larger than {MAX_BUNDLE_BYTES >> 20} MiB; it is not a model "
                           "bundle of this project (or it was damaged).")
    return total + more


def _stage_stream(read, staging: Path, name: str, expected: int, source: Path, total: int) -> int:
    """Copy one file's bytes (``read(n)``) into ``staging/name``; returns the new running total."""
    fd = _new_file(staging, name)
    try:
        written = 0
        while True:
            try:
                block = read(CHUNK)
            except (tarfile.TarError, EOFError) as exc:
                raise ArchiveError(f"The bundle archive {source} is truncated or corrupt ({exc}); copy it again.") \
                    from None
            if not block:
                break
            written += len(block)
            total = _budget(total, len(block), source)
            _write_all(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    if expected >= 0 and written != expected:
        raise ArchiveError(f"The bundle archive {source} is truncated ({name}: {written} of {expected} bytes); copy "
                           "it again.")
    return total


def _stage_folder(source: Path, staging: Path) -> int:
    entries = sorted(os.scandir(source), key=lambda e: e.name)
    visible = [e for e in entries if not e.name.startswith(".")]
    if len(visible) > MAX_FILES:
        raise ArchiveError(f"The bundle folder {source} holds {len(visible)} entries (at most {MAX_FILES}); it is not "
                           "a model bundle.")
    total = 0
    for entry in visible:
        mode = entry.stat(follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):
            raise ArchiveError(f"The bundle folder {source} holds {entry.name}, which is not a plain file (a link, "
                               "folder or device); bundles hold plain files only.")
        with open(entry.path, "rb") as handle:
            total = _stage_stream(handle.read, staging, entry.name, -1, source, total)
    return total


def _member_name(member: tarfile.TarInfo, source: Path) -> str | None:
    """The file name inside the bundle, or None for entries that are skipped (the top folder, hidden files)."""
    raw = member.name
    parts = [p for p in PurePosixPath(raw).parts if p not in (".", "")]
    if raw.startswith(("/", "\\")) or ".." in parts or any("\\" in p for p in parts):
        raise ArchiveError(f"The bundle archive {source} contains the unsafe name {raw!r}; it was not made by "
                           "`trainer sign --tar`.")
    if len(parts) > 2 or (member.isdir() and len(parts) > 1):
        raise ArchiveError(f"The bundle archive {source} contains {raw!r} in a sub-folder; bundles are flat.")
    if member.issym() or member.islnk():
        raise ArchiveError(f"The bundle archive {source} contains the link {raw!r}; bundles hold plain files only.")
    if not (member.isreg() or member.isdir()):
        raise ArchiveError(f"The bundle archive {source} contains the special file {raw!r}; bundles hold plain "
                           "files only.")
    if member.isdir() or not parts or parts[-1].startswith("."):
        return None
    return parts[-1]


def _stage_members(archive: tarfile.TarFile, source: Path, staging: Path) -> int:
    total, seen, folders = 0, set(), set()  # file names, top-level folder names
    while True:
        try:
            member = archive.next()
        except (tarfile.TarError, EOFError) as exc:
            raise ArchiveError(f"The bundle archive {source} is truncated or corrupt ({exc}); copy it again.") from None
        if member is None:
            break
        name = _member_name(member, source)
        parts = [p for p in PurePosixPath(member.name).parts if p not in (".", "")]
        if len(parts) == 2 or (member.isdir() and parts):
            folders.add(parts[0])
        if len(folders) > 1:
            raise ArchiveError(f"The bundle archive {source} holds more than one folder; it must hold one bundle.")
        if name is None:
            continue
        if name in seen or len(seen) >= MAX_FILES:
            raise ArchiveError(f"The bundle archive {source} lists {name!r} twice or holds more than {MAX_FILES} "
                               "files; it is not a model bundle.")
        seen.add(name)
        _budget(total, member.size, source)  # refuse a huge member before reading any of it
        handle = archive.extractfile(member)
        total = _stage_stream(handle.read, staging, name, member.size, source, total)
    if not seen:
        raise ArchiveError(f"The bundle archive {source} holds no files; copy it again.")
    # tarfile reads a header cut short as the end of the archive: a complete tar ends with two zero blocks.
    with open(source, "rb") as handle:
        handle.seek(archive.offset)
        if handle.read(END_MARKER) != bytes(END_MARKER):
            raise ArchiveError(f"The bundle archive {source} is truncated (its end-of-archive marker is missing); copy "
                               "it again.")
    return total


def _stage_tar(source: Path, staging: Path) -> int:
    try:
        with tarfile.open(source, "r:") as archive:
            return _stage_members(archive, source, staging)
    except (tarfile.TarError, EOFError) as exc:  # the header of the first member already fails
        raise ArchiveError(f"The bundle archive {source} is not a readable tar file ({exc}); copy it again.") from None


def stage_bundle(source: str | Path, staging: str | Path) -> int:
    """Copy a bundle folder or tar file into the (new, empty) ``staging`` folder, fsyncing every file.

    Returns:
        Bytes staged.

    Raises:
        ArchiveError: unsafe, corrupt, truncated or too large (one sentence).
        OSError: the unit's disk failed or is full (the caller cleans the staging folder up).
    """
    source, staging = Path(source), Path(staging)
    return _stage_tar(source, staging) if source.is_file() else _stage_folder(source, staging)


def source_size(source: str | Path) -> int:
    """Bytes a bundle source will need on the unit at most (a plain tar's size bounds its content)."""
    source = Path(source)
    if source.is_file():
        return source.stat().st_size
    return sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(source) if e.is_file(follow_symlinks=False))


def write_bundle_tar(folder: str | Path, out: str | Path) -> Path:
    """Write a bundle folder as a plain tar (files under ``<folder name>/``, owner 0, mode 0644), atomically.

    Returns:
        The tar path.
    """
    folder, out = Path(folder), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as archive:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            info = tarfile.TarInfo(f"{folder.name}/{entry.name}")
            st = entry.stat(follow_symlinks=False)
            info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), FILE_MODE
            with open(entry.path, "rb") as handle:
                archive.addfile(info, handle)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, out)
    return out

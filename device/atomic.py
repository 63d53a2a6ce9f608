"""Crash-safe file writing: temporary file in the same folder, fsync, ``os.replace``, fsync of the folder.

After a power cut or SIGKILL a path holds either its old content or the complete new content, never a half file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Suffix of in-flight temporary files (ignored by git via "*.tmp"; swept by RecordStore.recover()).
TMP_SUFFIX = ".tmp"


def fsync_dir(folder: str | Path) -> None:
    """fsync a directory so a rename inside it survives power loss (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes, fsync: bool = True, sync_folder: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: destination file; its folder is created if missing.
        data: the complete file content.
        fsync: flush the data (and the folder) to disk (turn off only for throwaway output).
        sync_folder: also fsync the folder; callers writing several files into one folder pass False and call
            :func:`fsync_dir` once after the last one.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep the half-written copy
        raise
    if fsync and sync_folder:
        fsync_dir(path.parent)
    return path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_private(path: str | Path, data: bytes, mode: int = 0o600) -> Path:
    """Create a new file that only its owner may read (patient data, private keys), flushed to disk.

    Args:
        path: the file to create; an existing file is an error (``FileExistsError``), never overwritten.
        data: the complete content.
        mode: permission bits (default 0600), set whatever the umask; a file system without permissions (a FAT
            USB stick) keeps its own, which the caller can check.

    Returns:
        The path.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.chmod(path, mode)
    except OSError:
        pass  # FAT and other permission-less file systems
    return path

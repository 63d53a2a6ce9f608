"""Crash-safe file writing: temporary file in the same folder, fsync, ``os.replace``, fsync of the folder.

After a power cut or SIGKILL a path holds either its old content or the complete new content, never a half file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

# Suffix of in-flight temporary files (ignored by git via "*.tmp"; swept by RecordStore.recover()).
TMP_SUFFIX = ".tmp"
# Everything the unit writes about a patient (records, photographs, screens, exports): its user only.
PRIVATE_FILE_MODE, PRIVATE_DIR_MODE = 0o600, 0o700


def make_dirs(folder: str | Path, mode: int | None = None) -> Path:
    """Create ``folder`` and its missing parents; with ``mode``, each folder created here gets exactly that mode
    (whatever the umask), and so does ``folder`` itself when it exists already (tightened, never loosened by the
    umask). File systems without permissions (FAT) keep theirs.
    """
    folder = Path(folder)
    if mode is None:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            pass  # another process made it meanwhile
        _chmod(path, mode)
    if not missing:
        _chmod(folder, mode)
    return folder


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError:
        pass  # FAT and other permission-less file systems, or a folder owned by someone else


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


def write_atomic(path: str | Path, data: bytes, fsync: bool = True, sync_folder: bool = True,
                 private: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: destination file; its folder is created if missing.
        data: the complete file content.
        fsync: flush the data (and the folder) to disk (turn off only for throwaway output).
        sync_folder: also fsync the folder; callers writing several files into one folder pass False and call
            :func:`fsync_dir` once after the last one.
        private: patient data: the file is created :data:`PRIVATE_FILE_MODE` and missing folders
            :data:`PRIVATE_DIR_MODE`, whatever the umask (else 0644 less the umask, folders as the umask says).

    Returns:
        The destination path.
    """
    path = Path(path)
    if private:
        if not path.parent.is_dir():
            make_dirs(path.parent, PRIVATE_DIR_MODE)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    mode = PRIVATE_FILE_MODE if private else 0o644
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            if private:
                try:
                    os.fchmod(fd, mode)  # exactly 0600, whatever the umask
                except OSError:
                    pass  # FAT
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


class SpecialFileError(OSError):
    """A path names a FIFO, device, socket or folder where a regular file was expected (``kind`` says which)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


class FileTooLargeError(OSError):
    """A file is larger than the reader's byte limit (``size`` bytes, ``limit`` bytes)."""

    def __init__(self, path: str | Path, size: int, limit: int) -> None:
        super().__init__(f"{path} is larger than {limit} bytes")
        self.size, self.limit = size, limit


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words (for messages)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """Read a whole regular file of at most ``max_bytes``, never blocking on a FIFO nor reading a device for ever.

    The file is opened non-blocking (a FIFO with no writer opens at once) and checked with ``fstat`` on that
    descriptor, so a symlink to ``/dev/zero`` or a FIFO named ``.jpg`` is refused, and the size is checked before
    and while reading (a file that grows past the limit is refused too).

    Raises:
        SpecialFileError: not a regular file; FileTooLargeError: above ``max_bytes``; OSError: cannot be opened.
    """
    fd = os.open(str(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SpecialFileError(path, file_kind(st.st_mode))
        if st.st_size > max_bytes:
            raise FileTooLargeError(path, st.st_size, max_bytes)
        chunks, total = [], 0
        while block := os.read(fd, min(1 << 20, max_bytes + 1 - total) or 1):
            chunks.append(block)
            total += len(block)
            if total > max_bytes:
                raise FileTooLargeError(path, total, max_bytes)
        return b"".join(chunks)
    finally:
        os.close(fd)

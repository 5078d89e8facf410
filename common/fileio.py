"""Files the program writes itself (keys, state, config), and the SHA-256 of a file: the one place for each.

- ``write_atomic(path, data, mode)``: a crash, a full disk or any error leaves the old
  content or the new, never a mix: the bytes go to a temporary file beside it (every
  byte written, its size checked), which is fsynced, renamed over ``path``, and the
  directory is fsynced so the rename itself survives a power cut. Any failure raises
  ``FileWriteError`` naming the path and the cause; before the rename the old file is
  untouched and the temporary file is removed.
- ``replace_file(src, dst)``: the same for a file already written (e.g. by a tool):
  fsync it, rename it over ``dst``, fsync the directory.
- ``fsync_dir(path)``: make the entries of a directory (a rename, a new file) durable.
- ``sha256_file(path, size)``: the SHA-256 (hex) of a file, read a block at a time.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from common.errors import FileWriteError, KeyFileError

__all__ = ["check_private_mode", "fsync_dir", "replace_file", "sha256_file", "write_atomic"]

READ_BLOCK = 1 << 20


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the directory ``path``: its entries (a rename into it, a new file) survive a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise FileWriteError(os.fspath(path), f"cannot open the directory to fsync it: {_cause(exc)}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise FileWriteError(os.fspath(path), f"fsync of the directory failed: {_cause(exc)}") from exc
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (permissions ``mode``) so that a crash leaves the old or the new content.

    Raises ``FileWriteError`` (an ``OSError``) naming the path and the cause on any failure: a short
    write (a full disk, a file size limit), a failed fsync, a failed rename. The old content is intact
    then, unless only the final directory fsync failed (the new content is in place, but its rename may
    not survive a power cut; the message says so).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    view = memoryview(data).cast("B")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise FileWriteError(str(path), f"cannot create its temporary file {tmp.name!r}: {_cause(exc)}") from exc
    try:
        try:
            written = 0
            while written < len(view):
                n = os.write(fd, view[written:])
                if n <= 0:
                    raise FileWriteError(str(path), f"{written} of {len(view)} bytes written: the disk took no more")
                written += n
            size = os.fstat(fd).st_size
            if size != len(view):
                raise FileWriteError(str(path), f"the temporary file holds {size} bytes, not {len(view)}")
            os.fchmod(fd, mode)  # the umask may have narrowed it
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except FileWriteError:
        _discard(tmp)
        raise
    except OSError as exc:
        _discard(tmp)
        raise FileWriteError(str(path), f"{_cause(exc)}; the old content is intact") from exc
    _fsync_parent(path)


def replace_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move the file ``src`` (already written) over ``dst`` durably: fsync it, rename, fsync the directory."""
    src, dst = Path(src), Path(dst)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(src, dst)
    except OSError as exc:
        raise FileWriteError(str(dst), f"cannot move {str(src)!r} over it: {_cause(exc)}") from exc
    _fsync_parent(dst)


def _fsync_parent(path: Path) -> None:
    try:
        fsync_dir(path.parent)
    except FileWriteError as exc:
        raise FileWriteError(str(path), f"written and renamed, but the rename may not survive a power cut "
                                        f"({exc.cause})") from exc


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass  # the write already failed; its error is the one to report


def sha256_file(path: str | os.PathLike[str], size: int | None = None, block_size: int = READ_BLOCK) -> str:
    """SHA-256 (hex) of the file's first ``size`` bytes (all of it when None), read ``block_size`` at a time.

    Raises ``OSError`` if the file cannot be read; fewer than ``size`` bytes hash what is there (callers
    compare the digest, so a short file never matches).
    """
    digest = hashlib.sha256()
    left = size
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(block_size if left is None else min(block_size, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def check_private_mode(path: str | os.PathLike[str], what: str = "private key") -> None:
    """Refuse a secret file others may read (or that cannot be looked at); ``common.keyfiles`` re-exports it."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {str(p)!r}: {exc.strerror}") from exc
    if mode & 0o077:
        raise KeyFileError(f"{what} {str(p)!r} is readable by others (mode {mode:04o}); run: chmod 600 {p}")

"""Executing an install plan: check the image, write it into the slot in blocks, verify what was written.

The order is RAUC's: the driver marks the target slot bad before ``write_slot``
starts, and arms it for a trial boot only after ``write_slot`` has read the
slot back and found the manifest's SHA-256. Images are streamed a block at a
time, so memory use does not grow with the image.

An image is the raw slot content (a rootfs image: no header of ours), or that
content compressed with zstd (recognised by the zstd frame magic): it is then
decompressed as it streams, and the size and SHA-256 checked are the raw
content's, as the manifest signs them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from common.errors import UpdateError
from common.fileio import sha256_file as hash_file  # the one SHA-256 of a file; exported here under its old name

__all__ = ["ZSTD_MAGIC", "check_image", "hash_file", "open_image", "write_slot"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

Writer = Callable[[int, bytes], int]  # os.write's shape; the power-cut harness injects one that dies mid-block


def open_image(path: str | os.PathLike[str]) -> BinaryIO:
    """The image's raw content as a binary stream: the file itself, or its zstd decompression."""
    f = open(path, "rb")
    if f.read(4) != ZSTD_MAGIC:
        f.seek(0)
        return f
    f.seek(0)
    import zstandard  # only for a compressed image: an idle agent never loads it

    return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)  # type: ignore[return-value]


def _compressed(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == ZSTD_MAGIC


def _zstd_digest(path: str | os.PathLike[str], size: int) -> str:
    import zstandard

    digest, actual = hashlib.sha256(), 0
    try:
        with open_image(path) as src:
            while block := src.read(1 << 20):
                digest.update(block)
                actual += len(block)
    except zstandard.ZstdError as exc:
        raise UpdateError(f"image {str(path)!r} is not valid zstd: {exc}") from exc
    if actual != size:
        raise UpdateError(f"image {str(path)!r} holds {actual} bytes (zstd), the manifest says {size}")
    return digest.hexdigest()


def check_image(path: str | os.PathLike[str], size: int, sha256: str) -> None:
    """The image (raw, or its zstd content) is ``size`` bytes long and hashes to ``sha256``; else ``UpdateError``."""
    try:
        if not _compressed(path):
            actual = os.stat(path).st_size
            if actual != size:
                raise UpdateError(f"image {str(path)!r} is {actual} bytes, the manifest says {size}")
            got = hash_file(path)
        else:
            got = _zstd_digest(path, size)
    except OSError as exc:
        raise UpdateError(f"image {str(path)!r} cannot be read: {exc}") from exc
    if got != sha256:
        raise UpdateError(f"image {str(path)!r} has sha256 {got}, the manifest says {sha256}: refusing to install it")


def write_slot(
    slot: str,
    slot_path: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    *,
    size: int,
    sha256: str,
    block_size: int = 64 * 1024,
    sync_every: int = 4 << 20,
    write: Writer = os.write,
) -> None:
    """Copy ``size`` bytes of the image (decompressed if zstd) into the slot, fsync, read the slot back and
    check its SHA-256.

    The slot must already be marked bad. A regular slot file is cut to
    ``size``; a block device keeps its length. Raises ``UpdateError`` naming the
    slot and the cause.
    """
    streamed = hashlib.sha256()
    try:
        src = open_image(image_path)
    except OSError as exc:
        raise UpdateError(f"Failed writing slot {slot}: image {str(image_path)!r}: {exc}") from exc
    with src:
        try:
            fd = os.open(slot_path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UpdateError(f"Failed writing slot {slot}: {exc}") from exc
        try:
            written = unsynced = 0
            while written < size:
                block = src.read(min(block_size, size - written))
                if not block:
                    raise UpdateError(
                        f"Failed writing slot {slot}: image {str(image_path)!r} ended after {written} of {size} bytes"
                    )
                streamed.update(block)
                view = memoryview(block)
                while view:
                    view = view[write(fd, view) :]
                written += len(block)
                unsynced += len(block)
                if unsynced >= sync_every:
                    os.fsync(fd)
                    unsynced = 0
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            raise UpdateError(f"Failed writing slot {slot}: {exc}") from exc
        finally:
            os.close(fd)
    if streamed.hexdigest() != sha256:
        raise UpdateError(
            f"Failed writing slot {slot}: image {str(image_path)!r} changed while it was written "
            f"(sha256 {streamed.hexdigest()}, the manifest says {sha256})"
        )
    try:
        got = hash_file(Path(slot_path), size)
    except OSError as exc:
        raise UpdateError(f"Failed verifying slot {slot}: {exc}") from exc
    if got != sha256:
        raise UpdateError(f"Failed verifying slot {slot}: it reads back with sha256 {got}, expected {sha256}")

"""``bsdiff4`` (plain) and ``zstd-patch-from`` payloads, and the compressed size of a full image.

``bsdiff4``: the payload is a standard BSDIFF40 patch (any bspatch applies it).
Making it needs ~17-19x the image in RAM and applying holds old and new in
memory, so the engine only offers it for small images.

``zstd-patch-from``: one zstd frame compressed with the old image as a
raw-content dictionary, python-zstandard's equivalent of ``zstd --patch-from``.
``ZstdCompressor(level=19, dict_data=...)`` alone silently keeps level 19's
8 MiB window, so matches further back than that are lost and patches come out
1.2-81x larger: the window is set to cover old + new, and the payload's first
byte records it so the applier raises its decoder's ``max_window_size`` to
match. Applying maps the old image (the dictionary) and streams the output.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import BinaryIO

import bsdiff4
import zstandard

from common.errors import DeltaError

__all__ = [
    "ZSTD_LEVEL",
    "apply_bsdiff4",
    "apply_zstd",
    "full_compressed_size",
    "make_bsdiff4",
    "make_zstd",
    "window_log_for",
]

ZSTD_LEVEL = 19
MAX_WINDOW_LOG = 31  # zstd's limit on 64-bit builds
_READ = 1 << 20


def window_log_for(nbytes: int) -> int:
    """The smallest zstd window log whose window holds ``nbytes``."""
    return min(MAX_WINDOW_LOG, max(10, (max(nbytes, 1) - 1).bit_length()))


def _map(fd: int, size: int) -> mmap.mmap | bytes:
    # the old image as a buffer without copying it into the heap (an empty file cannot be mapped)
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""


def make_bsdiff4(old_path: str, new_path: str, out: BinaryIO) -> None:
    with open(old_path, "rb") as f:
        old = f.read()
    with open(new_path, "rb") as f:
        new = f.read()
    out.write(bsdiff4.diff(old, new))


def apply_bsdiff4(old_fd: int, old_size: int, payload: bytes, write: Callable[[bytes], None], *, where: str) -> None:
    old = os.pread(old_fd, old_size, 0) if old_size else b""
    try:
        new = bsdiff4.patch(old, payload)
    except (ValueError, RuntimeError, OSError, EOFError, MemoryError) as exc:
        raise DeltaError(f"patch {where!r}: bsdiff4 payload does not apply ({exc})") from exc
    for i in range(0, len(new), _READ):
        write(new[i : i + _READ])


def make_zstd(old_path: str, new_path: str, out: BinaryIO, *, level: int = ZSTD_LEVEL) -> None:
    old_size, new_size = os.path.getsize(old_path), os.path.getsize(new_path)
    wlog = window_log_for(old_size + new_size)
    # no pledged source size: zstd then copies the dictionary into its window instead of attaching it,
    # which measured 4% smaller on real binaries (and slower); the frame carries no content size
    params = zstandard.ZstdCompressionParameters.from_level(level, window_log=wlog, dict_size=old_size)
    with open(old_path, "rb") as fo, open(new_path, "rb") as fn:
        dictionary = zstandard.ZstdCompressionDict(_map(fo.fileno(), old_size), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        cctx = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)
        out.write(bytes([wlog]))
        cctx.copy_stream(fn, out, read_size=_READ, write_size=_READ)


class _Sink:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write

    def write(self, data: bytes) -> int:
        self._write(data)
        return len(data)


def apply_zstd(
    old_fd: int, old_size: int, patch: BinaryIO, write: Callable[[bytes], None], *, where: str, max_window_log: int
) -> None:
    head = patch.read(1)
    if not head:
        raise DeltaError(f"patch {where!r}: zstd payload is empty")
    wlog = head[0]
    if wlog > max_window_log:
        raise DeltaError(
            f"patch {where!r}: zstd window of 2^{wlog} bytes is over this applier's limit of 2^{max_window_log}"
        )
    try:
        dictionary = zstandard.ZstdCompressionDict(_map(old_fd, old_size), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        dctx = zstandard.ZstdDecompressor(dict_data=dictionary, max_window_size=1 << max(wlog, 10))
        dctx.copy_stream(patch, _Sink(write), read_size=_READ, write_size=_READ)
    except zstandard.ZstdError as exc:
        raise DeltaError(f"patch {where!r}: zstd payload is corrupt ({exc})") from exc


def full_compressed_size(path: str, *, level: int) -> int:
    """Bytes of ``path`` compressed with zstd at ``level``, its window covering the whole file (streamed)."""
    size = os.path.getsize(path)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log_for(size), source_size=size, enable_ldm=size > (128 << 20)
    )
    cctx = zstandard.ZstdCompressor(compression_params=params)

    class _Count:
        n = 0

        def write(self, data: bytes) -> int:
            self.n += len(data)
            return len(data)

    counter = _Count()
    with open(path, "rb") as f:
        cctx.copy_stream(f, counter, size=size, read_size=_READ, write_size=_READ)
    return counter.n

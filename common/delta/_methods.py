"""``bsdiff4`` (plain) and ``zstd-patch-from`` payloads, and the compressed size of a full image.

``bsdiff4``: the payload is a standard BSDIFF40 patch (any bspatch applies it).
Making it needs ~17-19x the image in RAM and applying holds old and new in
memory, so the engine only offers it for small images.

``zstd-patch-from``: one zstd frame compressed with the old image as a
raw-content dictionary, python-zstandard's equivalent of ``zstd --patch-from``,
written bare (``zstd -d --patch-from=OLD PATCH`` applies it) with zstd's content
checksum. ``ZstdCompressor(level=19, dict_data=...)`` alone silently keeps level
19's 8 MiB window, so matches further back than that are lost and patches come
out 1.2-81x larger: the window is set to cover old + new (the frame header
carries it, and the applier raises its decoder's ``max_window_size`` to match,
up to its memory limit). The strongest settings the time budget allows are
tried (``ZSTD_SETTINGS``: the ultra level 22 with long-distance matching, the
frame with and without a pledged size, which each win on some binaries), and
the smallest frame is kept. Applying maps the old image (the dictionary) and
streams the output.
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
    "ZSTD_SETTINGS",
    "apply_bsdiff4",
    "apply_zstd",
    "bsdiff4_new_size",
    "full_compressed_size",
    "make_bsdiff4",
    "make_zstd",
    "window_log_for",
]

ZSTD_LEVEL = 19
# name -> (level, long-distance matching, frames tried: "stream" (no pledged size: zstd copies the dictionary
# into its window) and/or "pledged" (the new image's size given: it attaches it)), strongest first
ZSTD_SETTINGS = {
    "ultra": (22, True, ("stream", "pledged")),
    "ultra-stream": (22, True, ("stream",)),
    "19": (ZSTD_LEVEL, False, ("stream",)),
}
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


def make_zstd(old_path: str, new_path: str, out: BinaryIO, *, settings: str = "19") -> None:
    """Write the smallest bare zstd frame the ``settings`` (a ``ZSTD_SETTINGS`` name) make."""
    level, ldm, frames = ZSTD_SETTINGS[settings]
    old_size, new_size = os.path.getsize(old_path), os.path.getsize(new_path)
    wlog = window_log_for(old_size + new_size)
    best: bytes | None = None
    with open(old_path, "rb") as fo, open(new_path, "rb") as fn:
        old = _map(fo.fileno(), old_size)
        for frame in frames:
            pledged = frame == "pledged"
            params = zstandard.ZstdCompressionParameters.from_level(
                level, window_log=wlog, dict_size=old_size, enable_ldm=ldm, write_checksum=True,
                source_size=new_size if pledged else 0,
            )
            dictionary = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            cctx = zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)
            if pledged:  # in one call over the mapped image: streamed with a pledged size came out larger
                made = cctx.compress(_map(fn.fileno(), new_size))
            elif len(frames) == 1:  # one frame: streamed out, never held in memory
                fn.seek(0)
                cctx.copy_stream(fn, out, read_size=_READ, write_size=_READ)
                return
            else:
                fn.seek(0)
                made = _stream_frame(cctx, fn)
            if best is None or len(made) < len(best):
                best = made
    assert best is not None
    out.write(best)


def _stream_frame(cctx: zstandard.ZstdCompressor, src: BinaryIO) -> bytes:
    """One frame of ``src`` streamed without a pledged size, collected (it is a patch: small)."""
    chunks: list[bytes] = []

    class _Collect:
        def write(self, data: bytes) -> int:
            chunks.append(bytes(data))
            return len(data)

    cctx.copy_stream(src, _Collect(), read_size=_READ, write_size=_READ)
    return b"".join(chunks)


class _Sink:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write

    def write(self, data: bytes) -> int:
        self._write(data)
        return len(data)


def apply_zstd(
    old_fd: int, old_size: int, patch: BinaryIO, write: Callable[[bytes], None], *, where: str, max_window_log: int,
    bare: bool = True,
) -> None:
    """Apply a zstd patch-from payload: a bare frame, or (container format 1) a window-log byte and a frame."""
    if bare:
        start = patch.tell()
        try:
            wlog = max(zstandard.get_frame_parameters(patch.read(18)).window_size - 1, 1).bit_length()
        except zstandard.ZstdError as exc:
            raise DeltaError(f"patch {where!r}: zstd frame header is corrupt ({exc})") from exc
        _check_frame(patch, start, where)  # the decoder stops quietly at a cut: find one first
        patch.seek(start)
    else:
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
        why = "a corrupt patch, or not its old image" if bare else "a corrupt patch"
        raise DeltaError(f"patch {where!r}: zstd payload does not apply ({exc}): {why}") from exc


def _check_frame(f: BinaryIO, start: int, where: str) -> None:
    """Walk one zstd frame's block headers from ``start``: it must end with its last block (and checksum)
    exactly at the end of the file. Reads only the headers."""
    f.seek(start)
    head = f.read(5)
    fhd = head[4] if len(head) == 5 else 0
    fcs_flag, single, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
    pos = start + 5 + (0 if single else 1) + (0, 1, 2, 4)[did_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
    end = f.seek(0, os.SEEK_END)
    while True:
        f.seek(pos)
        raw = f.read(3)
        if len(raw) < 3:
            raise DeltaError(f"patch {where!r}: zstd frame is cut short (no last block)")
        h = int.from_bytes(raw, "little")
        last, kind, size = h & 1, (h >> 1) & 3, h >> 3
        if kind == 3:
            raise DeltaError(f"patch {where!r}: zstd frame has a block of reserved type")
        pos += 3 + (1 if kind == 1 else size)
        if last:
            break
    if pos + 4 * checksum != end:
        raise DeltaError(f"patch {where!r}: zstd frame ends at byte {pos + 4 * checksum}, the file at {end}")


def bsdiff4_new_size(payload: bytes, *, where: str) -> int:
    """The new image's size a BSDIFF40 patch declares (its header: magic, three sign-magnitude int64s)."""
    if len(payload) < 32 or not payload.startswith(b"BSDIFF40"):
        raise DeltaError(f"patch {where!r}: truncated BSDIFF40 header")
    raw = int.from_bytes(payload[24:32], "little")
    size = raw & ~(1 << 63)
    if raw >> 63:
        raise DeltaError(f"patch {where!r}: BSDIFF40 header declares a negative size")
    return size


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

"""Apply a delta: check the base, stream the new image, prove it, then put it in place.

``apply_delta`` checks the old image against the patch header before writing
anything, streams the new image to a temporary file beside the target, checks
its size and SHA-256 against the header, then fsyncs and renames it into place.
A failure at any point leaves no partial file. A bare patch (a zstd frame or a
BSDIFF40 file, ``_format``) declares no base or result: the zstd frame's own
checksum still proves the output, and the result carries the SHA-256 for the
caller to check against its manifest (every caller in EdgeFleet does).

The device and the gateway pass the signed manifest's size and SHA-256 (``expect_size``, ``expect_sha256``):
a header that declares another result is refused before anything is written, and no patch (bare or not) may
write a byte past that size; the output is hashed as it is written and checked before the rename. So a
"delta bomb" (a few KiB that expand to gigabytes) costs at most the manifest's size on disk, and applying
buffers at most ``max_memory_bytes`` (``APPLY_MEMORY`` by default; ``docs/FIRMWARE.md``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.delta import _blocks, _methods
from common.delta._format import (
    BLOCKS,
    BSDIFF4,
    ZSTD,
    PatchHeader,
    file_digest,
    read_header,
)
from common.errors import DeltaError

__all__ = ["APPLY_MEMORY", "ApplyResult", "apply_delta", "read_patch_header"]

APPLY_MEMORY = 512 << 20  # default bound on what applying may buffer


@dataclass(frozen=True, slots=True)
class ApplyResult:
    method: str
    old_size: int
    new_size: int
    patch_size: int
    seconds: float
    new_sha256: str
    bare: bool = False  # a bare patch declares no hash: the caller checks new_sha256 against its manifest


def apply_delta(
    old_path: str | os.PathLike[str],
    patch_path: str | os.PathLike[str],
    new_path: str | os.PathLike[str],
    *,
    max_memory_bytes: int = APPLY_MEMORY,
    expect_size: int | None = None,
    expect_sha256: str | None = None,
) -> ApplyResult:
    """Rebuild the new image from ``old_path`` and ``patch_path`` into ``new_path`` (atomically).

    Raises ``DeltaError`` naming the patch and the cause: not a patch, the wrong
    old image, a corrupt payload, or an output whose size or SHA-256 is wrong.
    Applying buffers at most ``max_memory_bytes`` (a ``bsdiff4-blocks`` group,
    a zstd window, or a plain bsdiff4 pair of images); a patch needing more is refused. With ``expect_size``
    and ``expect_sha256`` (the signed manifest's), the output must be exactly that image, and a patch is cut
    off the moment it writes past ``expect_size``.
    """
    t0 = time.monotonic()
    where = os.fspath(patch_path)
    new = Path(new_path)
    tmp = new.with_name(f".{new.name}.part")
    with open(old_path, "rb") as fo, open(patch_path, "rb") as fp:
        header = read_header(fp, where)
        old_fd = fo.fileno()
        old_size, old_sha = file_digest(old_path)
        if not header.bare and (old_size, old_sha) != (header.old_size, header.old_sha256):
            raise DeltaError(
                f"patch {where!r}: {os.fspath(old_path)!r} is not its old image "
                f"(expected {header.old_size} bytes with SHA-256 {header.old_sha256[:16]}..., "
                f"got {old_size} bytes with {old_sha[:16]}...)"
            )
        if expect_size is not None and header.new_size is not None and header.new_size != expect_size:
            raise DeltaError(f"patch {where!r}: declares a {header.new_size}-byte image, the manifest {expect_size}")
        if expect_sha256 is not None and header.new_sha256 and header.new_sha256 != expect_sha256:
            raise DeltaError(f"patch {where!r}: declares image SHA-256 {header.new_sha256[:16]}..., the manifest "
                             f"{expect_sha256[:16]}...")
        limit = expect_size if expect_size is not None else header.new_size
        patch_size = os.fstat(fp.fileno()).st_size
        h = hashlib.sha256()
        written = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:

            def write(data: bytes | memoryview) -> None:
                nonlocal written
                written += len(data)
                if limit is not None and written > limit:
                    raise DeltaError(f"patch {where!r}: produces more than the {limit} bytes of its image")
                h.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]

            _apply_payload(header, old_size, old_fd, fp, patch_size, write, where, max_memory_bytes)
            if not header.bare and (written != header.new_size or h.hexdigest() != header.new_sha256):
                raise DeltaError(
                    f"patch {where!r}: output does not match ({written} bytes with SHA-256 {h.hexdigest()[:16]}..., "
                    f"declared {header.new_size} bytes with {header.new_sha256[:16]}...)"
                )
            if expect_size is not None and (written, h.hexdigest()) != (expect_size, expect_sha256 or h.hexdigest()):
                raise DeltaError(f"patch {where!r}: rebuilt {written} bytes with SHA-256 {h.hexdigest()[:16]}..., "
                                 f"not the manifest's {expect_size} bytes")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
    os.replace(tmp, new)
    dfd = os.open(new.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return ApplyResult(header.method, old_size, written, patch_size, time.monotonic() - t0, h.hexdigest(), header.bare)


def _apply_payload(
    header: PatchHeader,
    old_size: int,
    old_fd: int,
    fp: Any,
    patch_size: int,
    write: Callable[[bytes | memoryview], None],
    where: str,
    max_memory: int,
) -> None:
    if header.method == BLOCKS:
        _blocks.apply_blocks(
            old_fd, old_size, fp.fileno(), header.size, patch_size, write, where=where, max_control=max_memory,
            version=header.version,
        )
    elif header.method == ZSTD:
        _methods.apply_zstd(
            old_fd, old_size, fp, write, where=where, max_window_log=max(10, max_memory.bit_length() - 1),
            bare=header.bare,
        )
    elif header.method == BSDIFF4:
        payload = fp.read()
        new_size = header.new_size if header.new_size is not None else _methods.bsdiff4_new_size(payload, where=where)
        need = old_size + new_size + patch_size
        if need > max_memory:
            raise DeltaError(f"patch {where!r}: plain bsdiff4 needs {need} bytes in memory, over the limit of {max_memory}")
        _methods.apply_bsdiff4(old_fd, old_size, payload, write, where=where)
    else:  # read_header only returns known methods
        raise DeltaError(f"patch {where!r}: method {header.method!r} cannot be applied")


def read_patch_header(patch_path: str | os.PathLike[str]) -> PatchHeader:
    """The method, sizes and hashes a patch file declares (``DeltaError`` if it is not a patch)."""
    with open(patch_path, "rb") as f:
        return read_header(f, os.fspath(patch_path))

"""The patch formats: EdgeFleet's container around its own methods, the bare forms of the others.

A ``bsdiff4-blocks`` patch (a format of ours) sits in a container, format 2::

    magic and version         4 bytes  b"EFD\x02"
    method code               1 byte   (see METHOD_CODES)
    old size, new size        2 unsigned LEB128 varints
    SHA-256 of old, of new    2 x 32 bytes

then the method's payload: 69 bytes plus the two varints (75 for images of
1-256 MiB). The old image's hash lets ``apply`` refuse the wrong base before
writing anything; the new image's hash lets it prove its output.

A patch whose method is another tool's format is written bare, as that tool
writes it, because any container would make it larger than the tool's own
output: ``zstd-patch-from`` is one zstd frame (magic ``28 B5 2F FD``, with
zstd's content checksum; ``zstd -d --patch-from=OLD`` applies it) and
``bsdiff4`` a BSDIFF40 file (``bspatch`` applies it). A bare patch declares no
sizes or hashes: the applier still checks what the frame checks, and every
caller checks the rebuilt image against the signed manifest.

Format 1 (``EFDELTA\0``, version 1, method, 2 reserved bytes, sizes as two
u64, the two hashes: 92 bytes; a zstd payload began with a window-log byte) is
still read, so patches made before format 2 apply.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from common.errors import DeltaError

MAGIC_V1 = b"EFDELTA\x00"
MAGIC = b"EFD\x02"  # format 2
FORMAT_VERSION = 2
_HEADER_V1 = struct.Struct(">8sBB2xQQ32s32s")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BSDIFF_MAGIC = b"BSDIFF40"
_MAX_HEADER = 4 + 1 + 2 * 10 + 64  # format 2 with the longest varints

BSDIFF4 = "bsdiff4"
BLOCKS = "bsdiff4-blocks"
ZSTD = "zstd-patch-from"
METHOD_CODES = {BSDIFF4: 1, BLOCKS: 2, ZSTD: 3}
_CODE_METHODS = {v: k for k, v in METHOD_CODES.items()}


@dataclass(frozen=True, slots=True)
class PatchHeader:
    """What a patch says about itself: its method and the two images it joins.

    ``version`` is the container's format (1 or 2), 0 for a bare patch, which declares no
    sizes (None) or hashes (""); ``size`` is how many bytes the header takes (the payload follows).
    """

    method: str
    old_size: int | None
    new_size: int | None
    old_sha256: str
    new_sha256: str
    version: int = FORMAT_VERSION
    size: int = 0

    @property
    def bare(self) -> bool:
        return self.version == 0

    def pack(self) -> bytes:
        """The format-2 container header (for a method of ours)."""
        assert self.old_size is not None and self.new_size is not None
        out = bytearray(MAGIC)
        out.append(METHOD_CODES[self.method])
        put_varints(out, self.old_size, self.new_size)
        return bytes(out) + bytes.fromhex(self.old_sha256) + bytes.fromhex(self.new_sha256)


def read_header(f: BinaryIO, where: str) -> PatchHeader:
    """The header at the start of ``f``; leaves ``f`` at the payload (at 0 for a bare patch)."""
    raw = f.read(_HEADER_V1.size)
    if raw.startswith(ZSTD_MAGIC):
        f.seek(0)
        return PatchHeader(ZSTD, None, None, "", "", version=0, size=0)
    if raw.startswith(BSDIFF_MAGIC):
        f.seek(0)
        return PatchHeader(BSDIFF4, None, None, "", "", version=0, size=0)
    if raw.startswith(MAGIC) and len(raw) > len(MAGIC):
        reader = VarintReader(raw[len(MAGIC) + 1 : _MAX_HEADER], where, what="header")
        code = raw[len(MAGIC)]
        old_size, new_size = reader.read(), reader.read()
        at = len(MAGIC) + 1 + reader.pos
        f.seek(0)
        raw = f.read(at + 64)
        if len(raw) < at + 64:
            raise DeltaError(f"patch {where!r}: truncated header ({len(raw)} of {at + 64} bytes)")
        method = _method(code, where)
        return PatchHeader(method, old_size, new_size, raw[at : at + 32].hex(), raw[at + 32 : at + 64].hex(), 2, at + 64)
    if raw.startswith(MAGIC_V1):
        if len(raw) < _HEADER_V1.size:
            raise DeltaError(f"patch {where!r}: truncated header ({len(raw)} of {_HEADER_V1.size} bytes)")
        _magic, version, code, old_size, new_size, old_h, new_h = _HEADER_V1.unpack(raw)
        if version != 1:
            raise DeltaError(f"patch {where!r}: format version {version} is not supported (this build reads 1 and 2)")
        return PatchHeader(_method(code, where), old_size, new_size, old_h.hex(), new_h.hex(), 1, _HEADER_V1.size)
    if len(raw) < 8 and any(m.startswith(raw) for m in (MAGIC, MAGIC_V1, ZSTD_MAGIC, BSDIFF_MAGIC)):
        raise DeltaError(f"patch {where!r}: truncated header ({len(raw)} bytes)")
    raise DeltaError(f"patch {where!r}: not an EdgeFleet delta, a zstd frame or a BSDIFF40 patch (bad magic)")


def _method(code: int, where: str) -> str:
    if code not in _CODE_METHODS:
        raise DeltaError(f"patch {where!r}: unknown method code {code}")
    return _CODE_METHODS[code]


def put_varints(buf: bytearray, *values: int) -> None:
    """Append each value as an unsigned LEB128 varint."""
    for n in values:
        while n >= 0x80:
            buf.append((n & 0x7F) | 0x80)
            n >>= 7
        buf.append(n)


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
            size += len(piece)
    return size, h.hexdigest()


class VarintReader:
    """Unsigned LEB128 integers from a byte string; running off the end is a corrupt patch."""

    def __init__(self, data: bytes, where: str, what: str = "operation stream") -> None:
        self.data, self.pos, self.where, self.what = data, 0, where, what

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def read(self) -> int:
        n = shift = 0
        data = self.data
        while True:
            if self.pos >= len(data) or shift > 63:
                raise DeltaError(f"patch {self.where!r}: corrupt {self.what}")
            b = data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7

"""The patch file header, shared by every method, and small binary helpers.

A patch starts with a fixed 92-byte header::

    magic  b"EFDELTA\\0"       8 bytes
    format version            1 byte  (1)
    method code               1 byte  (see METHOD_CODES)
    reserved                  2 bytes (0)
    old size, new size        2 x u64 big-endian
    SHA-256 of old, of new    2 x 32 bytes

then the method's payload. The old image's hash lets ``apply`` refuse the wrong
base before writing anything; the new image's hash lets it prove its output.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from common.errors import DeltaError

MAGIC = b"EFDELTA\x00"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sBB2xQQ32s32s")
HEADER_SIZE = _HEADER.size

BSDIFF4 = "bsdiff4"
BLOCKS = "bsdiff4-blocks"
ZSTD = "zstd-patch-from"
METHOD_CODES = {BSDIFF4: 1, BLOCKS: 2, ZSTD: 3}
_CODE_METHODS = {v: k for k, v in METHOD_CODES.items()}


@dataclass(frozen=True, slots=True)
class PatchHeader:
    """What a patch says about itself: its method and the two images it joins."""

    method: str
    old_size: int
    new_size: int
    old_sha256: str
    new_sha256: str

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            METHOD_CODES[self.method],
            self.old_size,
            self.new_size,
            bytes.fromhex(self.old_sha256),
            bytes.fromhex(self.new_sha256),
        )


def read_header(f: BinaryIO, where: str) -> PatchHeader:
    raw = f.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise DeltaError(f"patch {where!r}: truncated header ({len(raw)} of {HEADER_SIZE} bytes)")
    magic, version, code, old_size, new_size, old_h, new_h = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise DeltaError(f"patch {where!r}: not an EdgeFleet delta (bad magic)")
    if version != FORMAT_VERSION:
        raise DeltaError(f"patch {where!r}: format version {version} is not supported (this build reads 1)")
    if code not in _CODE_METHODS:
        raise DeltaError(f"patch {where!r}: unknown method code {code}")
    return PatchHeader(_CODE_METHODS[code], old_size, new_size, old_h.hex(), new_h.hex())


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

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def read(self) -> int:
        n = shift = 0
        data = self.data
        while True:
            if self.pos >= len(data) or shift > 63:
                raise DeltaError(f"patch {self.where!r}: corrupt operation stream")
            b = data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7

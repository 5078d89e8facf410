"""Chunk hashes of a firmware image, and checks of one chunk or the whole image against a manifest.

A transfer verifies every chunk as it arrives (``verify_chunk``), so a bad one
is fetched again at once; after a delta is applied the rebuilt image is checked
whole (``verify_image``) before anything installs it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Protocol

from common.errors import ChunkError, ImageError
from common.fileio import sha256_file

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "ChunkedImage",
    "chunk_count",
    "chunk_range",
    "hash_image",
    "verify_chunk",
    "verify_image",
]

DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
_READ = 1 << 20


class ChunkedImage(Protocol):
    """What the checks read of an image's description: ``common.firmware.manifest.Manifest`` is one."""

    @property
    def version(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def chunks(self) -> Sequence[str]: ...


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def hash_image(path: str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[int, str, list[str]]:
    """``(size, SHA-256 hex, [SHA-256 hex of each chunk])`` of ``path``, read in one pass, a piece at a time."""
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {chunk_size} is not in 1..{MAX_CHUNK_SIZE}")
    whole = hashlib.sha256()
    chunks: list[str] = []
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = hashlib.sha256()
            got = 0
            while got < chunk_size:
                piece = f.read(min(_READ, chunk_size - got))
                if not piece:
                    break
                chunk.update(piece)
                whole.update(piece)
                got += len(piece)
            if not got:
                break
            chunks.append(chunk.hexdigest())
            size += got
            if got < chunk_size:
                break
    return size, whole.hexdigest(), chunks


def chunk_range(manifest: ChunkedImage, index: int) -> tuple[int, int]:
    """``(offset, length)`` of chunk ``index`` in the image (the last one may be short)."""
    n = len(manifest.chunks)
    if not 0 <= index < n:
        raise ChunkError(manifest.version, index, f"no such chunk (the image has {n})")
    offset = index * manifest.chunk_size
    return offset, min(manifest.chunk_size, manifest.size - offset)


def verify_chunk(manifest: ChunkedImage, index: int, data: bytes | memoryview) -> None:
    """Raise ``ChunkError`` naming the chunk unless ``data`` is exactly chunk ``index`` of the image."""
    _, length = chunk_range(manifest, index)
    if len(data) != length:
        raise ChunkError(manifest.version, index, f"{len(data)} bytes, expected {length}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.chunks[index]:
        raise ChunkError(
            manifest.version, index, f"SHA-256 {digest[:16]}... does not match the manifest's {manifest.chunks[index][:16]}..."
        )


def verify_image(manifest: ChunkedImage, path: str | os.PathLike[str]) -> None:
    """Raise ``ImageError`` unless the file at ``path`` is the manifest's full image (size and SHA-256)."""
    size = os.stat(path).st_size
    if size != manifest.size:
        raise ImageError(f"firmware {manifest.version} image {os.fspath(path)!r}: {size} bytes, expected {manifest.size}")
    digest = sha256_file(path)
    if digest != manifest.sha256:
        raise ImageError(
            f"firmware {manifest.version} image {os.fspath(path)!r}: SHA-256 {digest[:16]}... "
            f"does not match the manifest's {manifest.sha256[:16]}..."
        )

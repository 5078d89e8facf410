"""The cloud's content-addressed artifact store: firmware images and deltas, one file per SHA-256.

    store = ArtifactStore(data_dir / "artifacts")   # no I/O
    store.prepare()                                 # mkdir, remove temp files a crash left behind
    art = await store.ingest(request.stream(), limit=4 << 30)    # streamed; never whole in memory
    art = store.adopt(patch_path)                   # a file already written (a delta): hash and move it in
    store.path(art.sha256)                          # DATA/artifacts/<sha256>

An artifact is written to a temp file under ``.tmp/`` while it is hashed, then
fsynced and renamed to its SHA-256, and the directory fsynced: a crash leaves a
complete artifact or a temp file, never a partial file under a hash name. The
same bytes stored twice are one file. Nothing here deletes an artifact (one
file may belong to several releases).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Artifact", "ArtifactStore", "ArtifactTooLarge", "ArtifactWriter"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_WRITE = 1 << 20  # bytes gathered before one write (and hash update) on a worker thread
_READ = 1 << 20


@dataclass(frozen=True, slots=True)
class Artifact:
    sha256: str
    size: int
    path: Path


class ArtifactTooLarge(ValueError):
    """An upload went over its byte limit (nothing was kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"artifact is over the limit of {limit} bytes")
        self.limit = limit


class ArtifactWriter:
    """One artifact being written: ``write`` pieces, then ``commit`` (or ``abort``). Blocking calls."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self._tmp = store.temp_path("upload")
        self._file = open(self._tmp, "xb")  # noqa: SIM115 -- closed by commit() or abort()
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> Artifact:
        """Flush, fsync and rename to the SHA-256; an artifact already held is kept and the copy dropped."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
        return self._store._install(self._tmp, self._hash.hexdigest(), self.size)

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class ArtifactStore:
    """Files named by their SHA-256 under ``root``; temp files under ``root/.tmp``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()  # paths go to delta processes that run elsewhere
        self._tmp = self.root / ".tmp"

    def prepare(self) -> None:
        """Create the directories and remove temp files a crash left behind."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        for stale in self._tmp.iterdir():
            stale.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        if not _HEX64.fullmatch(sha256):
            raise ValueError(f"artifact id {sha256[:80]!r} is not 64 lowercase hex digits")
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def temp_path(self, what: str) -> Path:
        """A fresh name under ``.tmp`` (same file system as the artifacts, so a rename moves it in)."""
        return self._tmp / f"{what}-{uuid.uuid4().hex}"

    def writer(self) -> ArtifactWriter:
        return ArtifactWriter(self)

    async def ingest(self, pieces: AsyncIterable[bytes], *, limit: int, executor: Executor | None = None) -> Artifact:
        """Store the bytes of ``pieces`` (e.g. ``request.stream()``); writes and hashing run on ``executor``
        (default: the loop's), a megabyte at a time, so the event loop never waits on the disk.

        Over ``limit`` bytes raises ``ArtifactTooLarge`` and keeps nothing.
        """
        loop = asyncio.get_running_loop()
        writer = await loop.run_in_executor(executor, self.writer)
        try:
            buffer = bytearray()
            received = 0
            async for piece in pieces:
                received += len(piece)
                if received > limit:
                    raise ArtifactTooLarge(limit)
                buffer += piece
                if len(buffer) >= _WRITE:
                    data, buffer = bytes(buffer), bytearray()
                    await loop.run_in_executor(executor, writer.write, data)
            if buffer:
                await loop.run_in_executor(executor, writer.write, bytes(buffer))
            return await loop.run_in_executor(executor, writer.commit)
        except BaseException:
            await asyncio.shield(loop.run_in_executor(executor, writer.abort))
            raise

    def adopt(self, path: str | os.PathLike[str]) -> Artifact:
        """Move a finished file (on this file system, e.g. under ``.tmp``) into the store by its SHA-256."""
        src = Path(path)
        h = hashlib.sha256()
        size = 0
        with open(src, "rb") as f:
            while piece := f.read(_READ):
                h.update(piece)
                size += len(piece)
            os.fsync(f.fileno())
        return self._install(src, h.hexdigest(), size)

    def _install(self, tmp: Path, sha256: str, size: int) -> Artifact:
        final = self.path(sha256)
        if final.is_file() and final.stat().st_size == size:
            tmp.unlink(missing_ok=True)  # the same bytes are already held
        else:
            os.replace(tmp, final)
            _fsync_dir(self.root)
        return Artifact(sha256, size, final)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

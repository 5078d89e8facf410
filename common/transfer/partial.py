"""A download's file on disk: chunks written in place, progress logged, so a SIGKILL loses one chunk at most.

    part = PartialFile(dir / f"{sha}.part", plan)   # opens or resumes
    part.have                                       # chunk indexes already durable (each re-checked on open)
    part.write(index, data)                         # pwrite + fsync, then the index appended to the log + fsync
    path = part.finish(final_path)                  # every chunk held: whole-file SHA-256 checked, renamed

The progress log (``<name>.progress``) is a sequence of 4-byte little-endian chunk indexes. A chunk's
index is appended only after its bytes are fsynced, so an index in the log always names a chunk
that is on disk; a torn last entry (the process died mid-append) is ignored. On open every logged
chunk is read back and checked against its hash anyway: a disk that lied is caught here, not after
install. Blocking calls: drivers run them off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from common.errors import TransferError
from common.fileio import replace_file, sha256_file
from common.transfer.download import Plan

__all__ = ["PartialFile"]

_ENTRY = struct.Struct("<I")


class PartialFile:
    def __init__(self, path: str | os.PathLike[str], plan: Plan) -> None:
        self.path = Path(path)
        self.log_path = self.path.with_name(self.path.name + ".progress")
        self.plan = plan
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._log = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise TransferError(plan.artifact, f"cannot open {self.path}: {exc.strerror}") from exc
        self.have = self._resume()

    def _resume(self) -> set[int]:
        raw = os.pread(self._log, os.fstat(self._log).st_size, 0)
        logged = {_ENTRY.unpack_from(raw, i)[0] for i in range(0, len(raw) - len(raw) % _ENTRY.size, _ENTRY.size)}
        good = set()
        for index in logged:
            if index >= len(self.plan.chunks):
                continue
            offset = index * self.plan.chunk_size
            data = os.pread(self._fd, self.plan.length(index), offset)
            if hashlib.sha256(data).hexdigest() == self.plan.chunks[index]:
                good.add(index)
        if len(raw) % _ENTRY.size or good != logged:  # rewrite a torn or lying log to what holds
            os.ftruncate(self._log, 0)
            if good:
                os.write(self._log, b"".join(_ENTRY.pack(i) for i in sorted(good)))
            os.fsync(self._log)
        return good

    def write(self, index: int, data: bytes) -> None:
        """Make chunk ``index`` durable (the caller verified it)."""
        try:
            os.pwrite(self._fd, data, index * self.plan.chunk_size)
            os.fsync(self._fd)
            os.write(self._log, _ENTRY.pack(index))
            os.fsync(self._log)
        except OSError as exc:
            raise TransferError(self.plan.artifact, f"cannot write chunk {index} to {self.path}: {exc.strerror}") from exc
        self.have.add(index)

    def read(self, index: int) -> bytes:
        return os.pread(self._fd, self.plan.length(index), index * self.plan.chunk_size)

    @property
    def complete(self) -> bool:
        return len(self.have) == len(self.plan.chunks)

    def finish(self, final: str | os.PathLike[str]) -> Path:
        """Check the whole file against the plan's SHA-256 and move it to ``final``; the log goes."""
        if not self.complete:
            raise TransferError(self.plan.artifact, f"{len(self.plan.chunks) - len(self.have)} chunks still missing")
        os.ftruncate(self._fd, self.plan.size)
        self.close()
        digest = sha256_file(self.path, self.plan.size)
        if digest != self.plan.artifact:
            raise TransferError(self.plan.artifact, f"the assembled file's SHA-256 is {digest[:16]}...")
        final = Path(final)
        replace_file(self.path, final)  # fsync, rename, directory fsync
        self.log_path.unlink(missing_ok=True)
        return final

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)

    def close(self) -> None:
        for fd in (self._fd, self._log):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = self._log = -1


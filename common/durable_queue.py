"""The one durable queue: LMDB, one writer thread, group commit.

Used by the device agent (its local telemetry buffer) and the gateway (its
outbox). Records get consecutive sequence numbers starting at 1 that are never
reused, even after everything is acknowledged.

    q = DurableQueue(path, max_bytes=64 << 20)
    q.start()
    seqs = await q.append_many([b"a", b"b"])   # resolves once fsync'd
    for seq, payload in q.read(after=0, limit=100): ...
    await q.ack(seqs[-1])                     # drops everything up to it
    q.close()

Every write (append or ack) goes through one writer thread. The thread takes
every request waiting at that moment and runs them in one LMDB transaction, so
one fsync covers many appends (group commit): while it is busy committing, the
next group forms. An append's future resolves only after its transaction has
committed (with ``durable=True``, after fsync). Futures of one commit are
resolved with one ``call_soon_threadsafe`` per event loop, not one per record.

``durable=False`` is the ``fast`` mode: commits skip fsync and the writer
flushes at most every ``fast_sync_s`` seconds; a power cut may lose up to that
window of acknowledged appends (a process crash loses nothing: the OS has the
pages).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb

from common.errors import QueueClosedError, QueueError, QueueFullError

__all__ = ["DurableQueue", "QueueStats"]

_KEY = struct.Struct(">Q")
_META_NEXT = b"next"
_META_BYTES = b"bytes"
_APPEND, _ACK, _CLOSE = 0, 1, 2
_MAX_GROUP = 4096  # requests taken into one transaction


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A consistent snapshot of the queue's counters."""

    path: str
    count: int
    size_bytes: int
    max_bytes: int
    first_seq: int  # lowest unacknowledged sequence (next_seq when empty)
    next_seq: int  # the sequence the next append will get
    commits: int
    appended: int


class DurableQueue:
    """Append, read a batch, acknowledge up to a sequence; bounded in bytes."""

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        durable: bool = True,
        fast_sync_s: float = 1.0,
        map_size: int | None = None,
    ) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        self.durable = durable
        self.fast_sync_s = fast_sync_s
        self._map_size = map_size or max(64 << 20, max_bytes * 3 + (64 << 20))
        self._requests: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._env: lmdb.Environment | None = None
        self._db: Any = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next = 1
        self._first = 1
        self._bytes = 0
        self._count = 0
        self._commits = 0
        self._appended = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> DurableQueue:
        """Open (or create) the LMDB environment and start the writer thread."""
        if self._env is not None:
            return self
        try:
            env = lmdb.open(
                self.path,
                map_size=self._map_size,
                max_dbs=2,
                sync=self.durable,
                metasync=self.durable,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise QueueError(f"queue {self.path!r}: cannot open LMDB environment: {exc}") from exc
        self._env = env
        self._db = env.open_db(b"records")
        self._meta = env.open_db(b"meta")
        with env.begin(db=self._meta) as txn:
            raw_next = txn.get(_META_NEXT)
            raw_bytes = txn.get(_META_BYTES)
        self._next = _KEY.unpack(raw_next)[0] if raw_next else 1
        self._bytes = _KEY.unpack(raw_bytes)[0] if raw_bytes else 0
        with env.begin(db=self._db) as txn:
            self._count = txn.stat(self._db)["entries"]
            cur = txn.cursor()
            self._first = _KEY.unpack(cur.key())[0] if cur.first() else self._next
        self._thread = threading.Thread(target=self._writer, name=f"queue-writer:{self.path}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Finish every request already submitted, then close the environment."""
        if self._closed or self._env is None:
            self._closed = True
            return
        self._closed = True
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._requests.put((_CLOSE, None, done, None))
        done.result()
        assert self._thread is not None
        self._thread.join()
        self._env.close()
        self._env = None

    def __enter__(self) -> DurableQueue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------

    def append_many(self, payloads: Sequence[bytes]) -> asyncio.Future[list[int]]:
        """Append records; the future gives their sequences once they are committed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._submit((_APPEND, payloads, fut, loop))
        return fut

    def append(self, payload: bytes) -> asyncio.Future[list[int]]:
        """Append one record; the future gives ``[seq]`` once it is committed."""
        return self.append_many((payload,))

    def ack(self, up_to: int) -> asyncio.Future[int]:
        """Drop every record with sequence <= up_to; the future gives how many were dropped."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._submit((_ACK, up_to, fut, loop))
        return fut

    def append_many_sync(self, payloads: Sequence[bytes]) -> list[int]:
        """Blocking twin for threads without an event loop (tools, tests)."""
        fut: concurrent.futures.Future[list[int]] = concurrent.futures.Future()
        self._submit((_APPEND, payloads, fut, None))
        return fut.result()

    def ack_sync(self, up_to: int) -> int:
        """Blocking twin of ``ack``."""
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._submit((_ACK, up_to, fut, None))
        return fut.result()

    def _submit(self, req: tuple[Any, ...]) -> None:
        if self._closed or self._env is None:
            raise QueueClosedError(f"queue {self.path!r} is not open")
        self._requests.put(req)

    # -- reads -----------------------------------------------------------------------

    def read(self, after: int = 0, limit: int = 1000, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records with sequence > after, oldest first, about ``max_bytes`` at most."""
        if self._env is None:
            raise QueueClosedError(f"queue {self.path!r} is not open")
        out: list[tuple[int, bytes]] = []
        total = 0
        with self._env.begin(db=self._db, buffers=False) as txn:
            cur = txn.cursor()
            if not cur.set_range(_KEY.pack(max(after + 1, 0))):
                return out
            for key, value in cur:
                out.append((_KEY.unpack(key)[0], value))
                total += len(value)
                if len(out) >= limit or total >= max_bytes:
                    break
        return out

    def stats(self) -> QueueStats:
        return QueueStats(
            self.path, self._count, self._bytes, self.max_bytes, self._first, self._next, self._commits, self._appended
        )

    def __len__(self) -> int:
        return self._count

    # -- the writer thread -----------------------------------------------------------

    def _writer(self) -> None:
        get, get_nowait = self._requests.get, self._requests.get_nowait
        last_sync = time.monotonic()
        closing = None
        while closing is None:
            group = [get()]
            try:
                while len(group) < _MAX_GROUP:
                    group.append(get_nowait())
            except queue.Empty:
                pass
            results = self._commit_group(group)
            if any(req[0] == _CLOSE for req in group):
                closing = True
            if not self.durable and time.monotonic() - last_sync >= self.fast_sync_s:
                self._env.sync(True)
                last_sync = time.monotonic()
            _resolve(results)
        if not self.durable:
            self._env.sync(True)
        # anything submitted after close() began is refused, not lost silently
        leftovers = []
        try:
            while True:
                req = get_nowait()
                leftovers.append((req, None, QueueClosedError(f"queue {self.path!r} was closed")))
        except queue.Empty:
            pass
        _resolve(leftovers)

    def _commit_group(self, group: list[tuple[Any, ...]]) -> list[tuple[tuple[Any, ...], Any, BaseException | None]]:
        """Run a group in one transaction. Returns (request, result, error) for each."""
        nxt, size, count, first = self._next, self._bytes, self._count, self._first
        results: list[tuple[tuple[Any, ...], Any, BaseException | None]] = []
        env, db, key = self._env, self._db, _KEY.pack
        try:
            with env.begin(write=True) as txn:
                for req in group:
                    op, arg = req[0], req[1]
                    if op == _APPEND:
                        incoming = sum(map(len, arg))
                        if size + incoming > self.max_bytes:
                            results.append((req, None, QueueFullError(self.path, size, self.max_bytes, incoming)))
                            continue
                        seqs = list(range(nxt, nxt + len(arg)))
                        put = txn.put
                        for s, payload in zip(seqs, arg):
                            put(key(s), payload, db=db, append=True)
                        nxt += len(arg)
                        size += incoming
                        count += len(arg)
                        results.append((req, seqs, None))
                    elif op == _ACK:
                        dropped = 0
                        cur = txn.cursor(db=db)
                        if cur.first():
                            # delete() moves to the next entry; past the last one key() is empty
                            while (k := cur.key()) and _KEY.unpack(k)[0] <= arg:
                                size -= len(cur.value())
                                dropped += 1
                                cur.delete()
                        count -= dropped
                        results.append((req, dropped, None))
                    else:
                        results.append((req, None, None))
                cur = txn.cursor(db=db)
                first = _KEY.unpack(cur.key())[0] if cur.first() else nxt
                txn.put(_META_NEXT, key(nxt), db=self._meta)
                txn.put(_META_BYTES, key(size), db=self._meta)
        except lmdb.MapFullError as exc:
            err = QueueFullError(self.path, self._bytes, self.max_bytes, 0)
            err.__cause__ = exc
            return [(req, None, err) for req in group]
        except lmdb.Error as exc:
            err = QueueError(f"queue {self.path!r}: commit failed: {exc}")
            err.__cause__ = exc
            return [(req, None, err) for req in group]
        self._appended += nxt - self._next
        self._next, self._bytes, self._count, self._first = nxt, size, count, first
        self._commits += 1
        return results


def _resolve(results: Iterable[tuple[tuple[Any, ...], Any, BaseException | None]]) -> None:
    """Complete futures: one wake-up per event loop per commit."""
    by_loop: dict[Any, list[tuple[Any, Any, BaseException | None]]] = {}
    for req, result, err in results:
        fut, loop = req[2], req[3]
        if fut is None:
            continue
        if loop is None:
            if err is None:
                fut.set_result(result)
            else:
                fut.set_exception(err)
        else:
            by_loop.setdefault(loop, []).append((fut, result, err))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_complete, items)
        except RuntimeError:  # the loop was closed: nobody is waiting any more
            pass


def _complete(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, err in items:
        if fut.done():
            continue
        if err is None:
            fut.set_result(result)
        else:
            fut.set_exception(err)

"""An in-memory twin of ``DurableQueue`` for unit tests and virtual-time simulations.

Same interface and rules: named streams, consecutive sequences from 1 never
reused, a byte quota per stream that evicts the oldest records or refuses with
``QueueFullError`` as its policy says, TTLs on the injected clock, drops handed
to ``on_drop`` whose reports are appended at once, ``ack(up_to)`` drops every
record <= up_to. Nothing survives the process. No thread: each write takes
effect at once, and the async methods return futures that are already completed.
TTLs are checked on every write and on ``expire_sync()`` (a simulation calls it
from its clock).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from common.durable_queue import DEFAULT, EVICT_SLACK, DropHook, QueueStats, StreamPolicy
from common.errors import QueueClosedError, QueueError, QueueFullError

__all__ = ["MemoryQueue"]


class _Stream:
    def __init__(self, policy: StreamPolicy) -> None:
        self.policy = policy
        self.records: deque[tuple[int, bytes, int]] = deque()  # (seq, payload, enqueued at)
        self.next = 1
        self.size = 0
        self.appended = self.evicted = self.expired = 0

    def pop_front(self) -> tuple[int, bytes]:
        seq, payload, _ = self.records.popleft()
        self.size -= len(payload)
        return seq, payload


class MemoryQueue:
    """Append, read a batch, acknowledge up to a sequence; bounded in bytes per stream; held in memory."""

    def __init__(
        self,
        path: str = ":memory:",
        *,
        max_bytes: int = 256 * 1024 * 1024,
        streams: dict[str, StreamPolicy] | None = None,
        clock: Callable[[], int] = lambda: 0,
        on_drop: DropHook | None = None,
    ) -> None:
        self.path = str(path)
        self.policies = dict(streams) if streams else {DEFAULT: StreamPolicy(max_bytes)}
        self.max_bytes = sum(p.max_bytes for p in self.policies.values())
        self.clock = clock
        self.on_drop = on_drop
        self._streams = {name: _Stream(p) for name, p in self.policies.items()}
        self._commits = 0
        self._open = False
        self._closed = False

    def start(self) -> MemoryQueue:
        if self._closed:
            raise QueueClosedError(f"queue {self.path!r} was closed; open a new MemoryQueue")
        self._open = True
        return self

    def close(self) -> None:
        self._open, self._closed = False, True

    def __enter__(self) -> MemoryQueue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------

    def append_many_sync(self, payloads: Sequence[bytes], *, stream: str = DEFAULT) -> list[int]:
        st = self._stream(stream)
        payloads = [bytes(p) for p in _checked(self.path, payloads)]
        now = self.clock()
        self._expire(now)
        incoming = sum(map(len, payloads))
        if st.size + incoming > st.policy.max_bytes:
            if not st.policy.evict or incoming > st.policy.max_bytes:
                raise QueueFullError(f"{self.path}:{stream}", st.size, st.policy.max_bytes, incoming)
            dropped = []
            fit = max(0, st.policy.max_bytes - incoming - st.policy.max_bytes // EVICT_SLACK)
            while st.records and st.size > fit:
                dropped.append(st.pop_front())
            st.evicted += len(dropped)
            self._report(stream, "evicted", dropped, now)
        self._commits += 1
        return self._put(st, payloads, now)

    def ack_sync(self, up_to: int, *, stream: str = DEFAULT) -> int:
        st = self._stream(stream)
        dropped = 0
        while st.records and st.records[0][0] <= up_to:
            st.pop_front()
            dropped += 1
        self._commits += 1
        return dropped

    def expire_sync(self) -> None:
        self._check_open()
        self._expire(self.clock())

    def append_many(self, payloads: Sequence[bytes], *, stream: str = DEFAULT) -> asyncio.Future[list[int]]:
        return _settled(lambda: self.append_many_sync(payloads, stream=stream))

    def append(self, payload: bytes, *, stream: str = DEFAULT) -> asyncio.Future[list[int]]:
        return _settled(lambda: self.append_many_sync((payload,), stream=stream))

    def ack(self, up_to: int, *, stream: str = DEFAULT) -> asyncio.Future[int]:
        return _settled(lambda: self.ack_sync(up_to, stream=stream))

    def _put(self, st: _Stream, payloads: list[bytes], now: int) -> list[int]:
        seqs = list(range(st.next, st.next + len(payloads)))
        st.records.extend((s, p, now) for s, p in zip(seqs, payloads))
        st.next += len(payloads)
        st.size += sum(map(len, payloads))
        st.appended += len(payloads)
        return seqs

    def _expire(self, now: int) -> None:
        for name, st in self._streams.items():
            ttl = st.policy.ttl_ms
            dropped = []
            while ttl and st.records and st.records[0][2] < now - ttl:
                dropped.append(st.pop_front())
            st.expired += len(dropped)
            self._report(name, "expired", dropped, now)

    def _report(self, stream: str, reason: str, dropped: list[tuple[int, bytes]], now: int) -> None:
        if dropped and self.on_drop is not None:
            for target, payload in self.on_drop(stream, reason, dropped):
                self._put(self._streams[target], [payload], now)

    def _stream(self, name: str) -> _Stream:
        self._check_open()
        if name not in self._streams:
            raise QueueError(f"queue {self.path!r} has no stream {name!r}; its streams are {', '.join(self._streams)}")
        return self._streams[name]

    def _check_open(self) -> None:
        if not self._open:
            raise QueueClosedError(f"queue {self.path!r} is not open")

    # -- reads -----------------------------------------------------------------------

    def read(
        self, after: int = 0, limit: int = 1000, max_bytes: int = 1 << 20, *, stream: str = DEFAULT
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records with sequence > after, oldest first; stops once they total ``max_bytes``."""
        st = self._stream(stream)
        out: list[tuple[int, bytes]] = []
        if not st.records or limit < 1:
            return out
        start = max(0, after + 1 - st.records[0][0])  # sequences in a stream are consecutive
        total = 0
        for i in range(start, min(len(st.records), start + limit)):
            seq, payload, _ = st.records[i]
            out.append((seq, payload))
            total += len(payload)
            if total >= max_bytes:
                break
        return out

    def stats(self, stream: str = DEFAULT) -> QueueStats:
        st = self._stream(stream)
        first = st.records[0][0] if st.records else st.next
        age = max(0, self.clock() - st.records[0][2]) if st.records else 0
        return QueueStats(
            self.path, len(st.records), st.size, st.policy.max_bytes, first, st.next, self._commits, st.appended,
            stream, age, st.evicted, st.expired,
        )

    def __len__(self) -> int:
        return sum(len(st.records) for st in self._streams.values())


def _checked(path: str, payloads: Sequence[bytes]) -> Sequence[bytes]:
    for p in payloads:
        if not isinstance(p, (bytes, bytearray, memoryview)):
            raise TypeError(f"queue {path!r}: a payload must be bytes, not {type(p).__name__}")
    return payloads


def _settled(fn: Any) -> asyncio.Future[Any]:
    """Run a write now and hand its outcome back as a completed future, like a commit that already happened.

    A closed queue raises at the call, as ``DurableQueue`` does; a full one fails the future.
    """
    fut = asyncio.get_running_loop().create_future()
    try:
        fut.set_result(fn())
    except QueueFullError as exc:
        fut.set_exception(exc)
    return fut

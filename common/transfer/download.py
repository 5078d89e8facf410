"""One artifact's chunked, resumable download, sans-IO: the ZeroMQ guide's credit-based file transfer.

    dl = Download(Plan(artifact, size, chunk_size, chunk_hashes), have={0, 1}, window=4, rng=rng)
    send(dl.pump(now))                      # up to ``window`` ChunkRequests in flight, never one it has
    match dl.received(index, data, now):    # each chunk checked against its hash as it arrives
        case Verdict.STORE: persist it, then dl.stored(index)
        case Verdict.BAD | Verdict.STALE: nothing to write
    send(dl.tick(now))                      # at ``dl.wake_at()``: re-ask what timed out or waited out a backoff
    send(dl.link_up(now))                   # the link came back: what was in flight was lost with it

Flow control is credit: a request is one chunk of credit, and only ``window`` are out at once, so
a slow link holds ``window`` chunks in its buffers, never the whole artifact. A ``TokenBucket``
(optional) paces requests to a byte rate: the device's bandwidth limit.

Resuming: the caller persists each good chunk before calling ``stored`` and hands the persisted
set back as ``have`` after a restart, so a SIGKILL costs at most the chunk being written. A cut
link costs what was in flight; with ``window=1`` (the device hop) that is one chunk.

A chunk that fails its hash is asked for again after a backoff that grows with each failure of
that chunk (never in a tight loop); after ``max_failures`` failures of one chunk the download
fails with ``TransferError``. Every bad chunk is kept in ``failures`` for the caller to report.
No clock is read here: every call takes ``now``.
"""

from __future__ import annotations

import enum
import hashlib
import random
from dataclasses import dataclass, field

from common.backoff import Backoff
from common.errors import TransferError
from common.protocol import ChunkRequest
from common.shaping import TokenBucket

__all__ = ["Download", "Plan", "Verdict"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to fetch: the artifact's SHA-256, its size, its chunk size and each chunk's SHA-256."""

    artifact: str
    size: int
    chunk_size: int
    chunks: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.size < 0:
            raise TransferError(self.artifact, f"bad plan: size {self.size}, chunk size {self.chunk_size}")
        expected = -(-self.size // self.chunk_size)
        if len(self.chunks) != expected:
            raise TransferError(self.artifact, f"bad plan: {len(self.chunks)} chunk hashes for {expected} chunks")

    def length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)


class Verdict(enum.Enum):
    STORE = "store"  # a good chunk: persist it, then call ``stored``
    BAD = "bad"  # failed its hash: dropped, asked again after a backoff
    STALE = "stale"  # not asked for, or already held: dropped


@dataclass
class _Chunk:
    failures: int = 0
    backoff: Backoff | None = None
    retry_at: float = 0.0


@dataclass
class Download:
    plan: Plan
    have: set[int] = field(default_factory=set)
    window: int = 4
    timeout_s: float = 10.0
    max_failures: int = 8
    bucket: TokenBucket | None = None
    rng: random.Random = field(default_factory=random.Random)
    in_flight: dict[int, float] = field(default_factory=dict)  # index -> deadline
    stored_pending: set[int] = field(default_factory=set)  # good, being persisted
    failures: list[tuple[int, str]] = field(default_factory=list)  # (index, cause), for the caller to report
    requested: int = 0
    resent: int = 0
    duplicates: int = 0
    bad_chunks: int = 0
    _chunks: dict[int, _Chunk] = field(default_factory=dict)
    _asked: set[int] = field(default_factory=set)  # asked at least once (a second ask is a resend)
    _paced_until: float = 0.0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise TransferError(self.plan.artifact, f"window must be at least 1, got {self.window}")
        self.have = {i for i in self.have if 0 <= i < len(self.plan.chunks)}

    @property
    def done(self) -> bool:
        return len(self.have) == len(self.plan.chunks)

    @property
    def missing(self) -> int:
        return len(self.plan.chunks) - len(self.have)

    def pump(self, now: float) -> list[ChunkRequest]:
        """Requests for missing chunks, up to the window, paced by the bucket, skipping backed-off ones."""
        out: list[ChunkRequest] = []
        self._paced_until = 0.0
        busy = self.have | self.stored_pending | set(self.in_flight)
        for index in range(len(self.plan.chunks)):
            if len(self.in_flight) >= self.window:
                break
            if index in busy:
                continue
            state = self._chunks.get(index)
            if state is not None and state.retry_at > now:
                continue
            if self.bucket is not None and not self.bucket.take(self.plan.length(index), now):
                self._paced_until = now + self.bucket.wait_time(self.plan.length(index), now)
                break
            out.append(self._ask(index, now))
        return out

    def _ask(self, index: int, now: float) -> ChunkRequest:
        self.in_flight[index] = now + self.timeout_s
        self.requested += 1
        if index in self._asked:
            self.resent += 1
        self._asked.add(index)
        return ChunkRequest(self.plan.artifact, index, self.plan.chunk_size)

    def received(self, index: int, data: bytes, now: float) -> Verdict:
        """Check one arriving chunk. ``STORE``: persist ``data``, then call ``stored(index)``."""
        if index in self.have or index in self.stored_pending or not 0 <= index < len(self.plan.chunks):
            self.duplicates += 1
            return Verdict.STALE
        asked = self.in_flight.pop(index, None) is not None
        if not asked and index not in self._asked:
            self.duplicates += 1
            return Verdict.STALE
        expected = self.plan.chunks[index]
        if len(data) != self.plan.length(index) or hashlib.sha256(data).hexdigest() != expected:
            why = f"{len(data)} bytes" if len(data) != self.plan.length(index) else "SHA-256 does not match"
            self._bad(index, why, now)
            return Verdict.BAD
        self.stored_pending.add(index)
        return Verdict.STORE

    def _bad(self, index: int, cause: str, now: float) -> None:
        self.bad_chunks += 1
        state = self._chunks.setdefault(index, _Chunk())
        state.failures += 1
        self.failures.append((index, cause))
        if state.failures >= self.max_failures:
            raise TransferError(self.plan.artifact, f"chunk {index} failed {state.failures} times (last: {cause}); giving up")
        if state.backoff is None:
            state.backoff = Backoff(initial_s=1.0, max_s=60.0, rng=self.rng)
        state.retry_at = now + state.backoff.next_delay()

    def stored(self, index: int) -> None:
        """Chunk ``index`` is durable."""
        self.stored_pending.discard(index)
        self.have.add(index)
        self._chunks.pop(index, None)

    def store_failed(self, index: int) -> None:
        """Persisting chunk ``index`` failed: it is missing again."""
        self.stored_pending.discard(index)

    def refused(self, index: int, cause: str, now: float) -> None:
        """The server could not give chunk ``index`` (it may not hold it yet): ask again after a backoff."""
        self.in_flight.pop(index, None)
        state = self._chunks.setdefault(index, _Chunk())
        if state.backoff is None:
            state.backoff = Backoff(initial_s=0.5, max_s=30.0, rng=self.rng)
        state.retry_at = now + state.backoff.next_delay()
        self.failures.append((index, f"server: {cause}"))

    def link_up(self, now: float) -> list[ChunkRequest]:
        """The link was cut and is back: requests in flight died with it; ask again now."""
        lost = sorted(self.in_flight)
        self.in_flight.clear()
        out = [self._ask(i, now) for i in lost]
        return out + self.pump(now)

    def tick(self, now: float) -> list[ChunkRequest]:
        """Re-ask chunks whose answer is overdue, then fill the window."""
        overdue = sorted(i for i, deadline in self.in_flight.items() if deadline <= now)
        out = []
        for index in overdue:
            del self.in_flight[index]
            out.append(self._ask(index, now))
        return out + self.pump(now)

    def wake_at(self) -> float | None:
        """When ``tick`` has something to do next (a timeout, a backoff or the pace ending), or None."""
        times = list(self.in_flight.values())
        times += [s.retry_at for i, s in self._chunks.items() if i not in self.have and i not in self.in_flight and s.retry_at]
        if self._paced_until:
            times.append(self._paced_until)
        return min(times) if times else None

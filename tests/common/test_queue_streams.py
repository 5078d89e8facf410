"""Streams of one queue: independent sequences, quotas that evict or refuse, TTLs, drop reports.

One contract suite for DurableQueue (real LMDB) and MemoryQueue, on a fake clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.durable_queue import DurableQueue, StreamPolicy
from common.errors import QueueError, QueueFullError
from common.memory_queue import MemoryQueue

POLICIES = {
    "critical": StreamPolicy(max_bytes=100),
    "bulk": StreamPolicy(max_bytes=100, evict=True, ttl_ms=60_000),
}


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def report(stream, reason, dropped):
    """A drop hook: one record per drop, naming stream, reason and the range."""
    return [("critical", f"{stream}:{reason}:{dropped[0][0]}-{dropped[-1][0]}".encode())]


@pytest.fixture(params=["durable", "memory"])
def make(request, tmp_path: Path):
    made = []

    def make(clock, **kw):
        cls = DurableQueue if request.param == "durable" else MemoryQueue
        q = cls(str(tmp_path / f"q{len(made)}"), streams=POLICIES, clock=clock, on_drop=report, **kw).start()
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


def payloads(stream, q):
    return [p for _, p in q.read(limit=1000, stream=stream)]


def test_streams_have_their_own_sequences(make):
    q = make(Clock())
    assert q.append_many_sync([b"a", b"b"], stream="bulk") == [1, 2]
    assert q.append_many_sync([b"c"], stream="critical") == [1]
    q.ack_sync(2, stream="bulk")
    assert payloads("critical", q) == [b"c"] and payloads("bulk", q) == []
    assert len(q) == 1


def test_full_evicting_stream_drops_oldest_and_reports_the_range(make):
    q = make(Clock())
    q.append_many_sync([bytes(30)] * 3, stream="bulk")  # 90 of 100 bytes
    assert q.append_many_sync([bytes(30)] * 2, stream="bulk") == [4, 5]
    assert [s for s, _ in q.read(stream="bulk")] == [3, 4, 5]
    assert payloads("critical", q) == [b"bulk:evicted:1-2"]
    st = q.stats("bulk")
    assert (st.evicted, st.count, st.size_bytes) == (2, 3, 90)


def test_full_refusing_stream_is_backpressure_and_keeps_everything(make):
    q = make(Clock())
    q.append_many_sync([bytes(60)], stream="critical")
    with pytest.raises(QueueFullError, match="critical"):
        q.append_many_sync([bytes(60)], stream="critical")
    assert [s for s, _ in q.read(stream="critical")] == [1]
    assert q.stats("critical").evicted == 0


def test_append_larger_than_the_quota_is_refused_even_when_evicting(make):
    q = make(Clock())
    q.append_many_sync([bytes(10)], stream="bulk")
    with pytest.raises(QueueFullError):
        q.append_many_sync([bytes(101)], stream="bulk")
    assert q.stats("bulk").count == 1


def test_records_older_than_the_ttl_expire_and_are_reported(make):
    clock = Clock()
    q = make(clock)
    q.append_many_sync([b"old1", b"old2"], stream="bulk")
    clock.ms += 30_000
    q.append_many_sync([b"new"], stream="bulk")
    assert q.stats("bulk").oldest_age_ms == 30_000
    clock.ms += 30_001
    q.expire_sync()
    assert payloads("bulk", q) == [b"new"]
    assert payloads("critical", q) == [b"bulk:expired:1-2"]
    assert q.stats("bulk").expired == 2


def test_streams_without_ttl_never_expire(make):
    clock = Clock()
    q = make(clock)
    q.append_many_sync([b"keep"], stream="critical")
    clock.ms += 10**9
    q.expire_sync()
    assert payloads("critical", q) == [b"keep"]


def test_unknown_stream_is_a_clear_error(make):
    q = make(Clock())
    with pytest.raises(QueueError, match="no stream 'nope'"):
        q.append_many_sync([b"x"], stream="nope")


def test_drops_and_their_reports_survive_reopen_together(tmp_path):
    clock = Clock()
    path = str(tmp_path / "q")
    with DurableQueue(path, streams=POLICIES, clock=clock, on_drop=report) as q:
        q.append_many_sync([bytes(60)] * 1, stream="bulk")
        q.append_many_sync([bytes(60)] * 1, stream="bulk")
    with DurableQueue(path, streams=POLICIES, clock=clock, on_drop=report) as q:
        assert [s for s, _ in q.read(stream="bulk")] == [2]
        assert payloads("critical", q) == [b"bulk:evicted:1-1"]
        assert (q.stats("bulk").evicted, q.stats("bulk").next_seq) == (1, 3)


def test_ttl_is_measured_on_the_queue_clock_across_reopen(tmp_path):
    clock = Clock()
    path = str(tmp_path / "q")
    with DurableQueue(path, streams=POLICIES, clock=clock, on_drop=report) as q:
        q.append_many_sync([b"r"], stream="bulk")
    clock.ms += 61_000  # the (steady) clock moved on while the process was down
    with DurableQueue(path, streams=POLICIES, clock=clock, on_drop=report) as q:
        q.expire_sync()
        assert q.stats("bulk").count == 0 and q.stats("bulk").expired == 1

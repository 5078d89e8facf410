"""The store thread: one thread, the operator's calls ahead of the backlog, each queue in order."""

from __future__ import annotations

import threading
import zlib

import pytest

from cloud.store_thread import StoreThread


def test_urgent_calls_run_before_queued_work_and_each_queue_keeps_its_order():
    st = StoreThread()
    gate = threading.Event()
    ran: list[str] = []
    st.submit(gate.wait)  # the thread is busy: everything below queues
    futs = [st.submit(ran.append, f"ingest-{i}") for i in range(3)]
    futs += [st.urgent.submit(ran.append, f"api-{i}") for i in range(2)]
    gate.set()
    for f in futs:
        f.result(timeout=5)
    assert ran == ["api-0", "api-1", "ingest-0", "ingest-1", "ingest-2"]
    threads = {st.submit(lambda: threading.current_thread().name).result(), st.urgent.submit(lambda: threading.current_thread().name).result()}
    assert threads == {"store"}  # one thread: the store never sees two writers
    st.shutdown()


def test_errors_reach_the_caller_and_shutdown_runs_what_was_queued():
    st = StoreThread()
    with pytest.raises(ZeroDivisionError):
        st.submit(lambda: 1 / 0).result(timeout=5)
    done: list[int] = []
    for i in range(3):
        st.submit(done.append, i)
    st.shutdown(wait=True)
    assert done == [0, 1, 2]
    with pytest.raises(RuntimeError, match="shut down"):
        st.submit(print)


def test_shutdown_with_cancel_finishes_the_call_in_hand_cancels_the_queue_and_runs_last():
    st = StoreThread()
    started, gate = threading.Event(), threading.Event()
    ran: list[str] = []

    def in_hand() -> str:
        started.set()
        gate.wait(5)
        ran.append("in hand")
        return "committed"

    first = st.submit(in_hand)
    started.wait(5)
    queued = [st.submit(ran.append, f"ingest-{i}") for i in range(3)] + [st.urgent.submit(ran.append, "api")]
    st.shutdown(wait=False, cancel_futures=True, last=lambda: ran.append("closed"))
    with pytest.raises(RuntimeError, match="shut down"):
        st.submit(print)  # no new work once stopping
    gate.set()
    assert st.join(5)
    assert first.result(timeout=0) == "committed"  # the call in hand finished and its caller hears so
    assert all(f.cancelled() for f in queued)  # nothing queued ran, and each caller is told so
    assert ran == ["in hand", "closed"] and st.cancelled == 4


def test_the_ingest_queue_writes_what_waits_as_one_call_and_answers_each_batch():
    from cloud.store_thread import IngestQueue

    st = StoreThread()
    gate = threading.Event()
    calls: list[list[str]] = []

    def write_many(items):
        calls.append(list(items))
        return [f"stored {item}" for item in items]

    q = IngestQueue(st, write_many, max_records=250)
    st.submit(gate.wait)  # the store thread is busy: batches gather
    futs = [q.submit(f"b{i}", 100) for i in range(5)]
    assert q.waiting == 5
    gate.set()
    assert [f.result(timeout=5) for f in futs] == [f"stored b{i}" for i in range(5)]
    assert calls == [["b0", "b1"], ["b2", "b3"], ["b4"]]  # at most 250 records a call, at least one batch
    assert q.writes == 3 and q.waiting == 0
    st.shutdown()


def test_a_failing_joint_write_is_retried_batch_by_batch_so_only_the_bad_one_fails():
    from cloud.store_thread import IngestQueue
    from common.errors import StoreError

    st = StoreThread()
    gate = threading.Event()

    def write_many(items):
        if "bad" in items:
            raise StoreError(f"store ingest failed: {len(items)} batches")
        return [len(items)] * len(items)

    q = IngestQueue(st, write_many)
    st.submit(gate.wait)
    good, bad, other = q.submit("a", 1), q.submit("bad", 1), q.submit("c", 1)
    gate.set()
    assert (good.result(timeout=5), other.result(timeout=5)) == (1, 1)
    with pytest.raises(StoreError, match="1 batches"):
        bad.result(timeout=5)
    st.shutdown()


def test_ingest_lanes_keep_a_gateways_batches_in_one_lane_and_write_lanes_side_by_side():
    from cloud.store_thread import IngestLanes

    main = StoreThread()
    held = threading.Event()
    wrote: list[tuple[str, list[str]]] = []

    def write_many(items: list[tuple[str, str]]) -> list[str]:
        if any(gw == "gw-slow" for gw, _ in items):
            assert held.wait(5)  # this lane is busy in its transaction ...
        wrote.append((threading.current_thread().name, [b for _, b in items]))
        return [f"stored {b}" for _, b in items]

    lanes = IngestLanes(main, 4, write_many)
    slow = lanes.submit("gw-slow", ("gw-slow", "s1"), 1)
    other = next(gw for gw in (f"gw-{i}" for i in range(40)) if zlib.crc32(gw.encode()) % 4 != zlib.crc32(b"gw-slow") % 4)
    firsts = [lanes.submit(other, (other, f"b{i}"), 1) for i in range(3)]
    assert [f.result(timeout=5) for f in firsts] == ["stored b0", "stored b1", "stored b2"]  # ... while another writes
    assert not slow.done()
    held.set()
    assert slow.result(timeout=5) == "stored s1"
    threads = {name for name, _ in wrote}
    assert len(threads) == 2 and all(n in ("store", "ingest-1", "ingest-2", "ingest-3") for n in threads)
    assert [b for name, batch in wrote for b in batch if b.startswith("b")] == ["b0", "b1", "b2"]  # in order
    assert lanes.writes == len(wrote)
    lanes.shutdown(last=lambda: None)
    assert main.join(5)


def test_ingest_lanes_stop_drops_what_waits_in_every_lane_then_runs_last_after_them():
    from cloud.store_thread import IngestLanes

    main = StoreThread()
    gate = threading.Event()
    order: list[str] = []
    in_hand = threading.Semaphore(0)

    def write_many(items: list[str]) -> list[str]:
        in_hand.release()
        gate.wait(5)
        order.append(f"wrote {len(items)}")
        return list(items)

    lanes = IngestLanes(main, 2, write_many, max_records=1)
    keys = [f"gw-{i}" for i in range(20)]
    futs = [lanes.submit(k, k, 1) for k in keys for _ in range(3)]  # each lane: one in hand, the rest waiting
    assert in_hand.acquire(timeout=5) and in_hand.acquire(timeout=5)
    lanes.shutdown(last=lambda: order.append("closed"))
    gate.set()
    assert main.join(5)
    assert order[-1] == "closed" and order.count("wrote 1") == 2  # one transaction in hand per lane, then last
    dropped = [f for f in futs if f.cancelled()]
    assert len(dropped) == len(futs) - 2 and lanes.cancelled >= len(dropped)  # never acknowledged: resent
    assert all(f.done() for f in futs)
    with pytest.raises(ValueError):
        IngestLanes(StoreThread(), 0, write_many)

"""The store thread: one thread, the operator's calls ahead of the backlog, each queue in order."""

from __future__ import annotations

import threading

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

"""The cloud's one store thread, with the operator's requests ahead of the backlog.

Every store call runs on one thread, so the database sees one writer and calls commit in the order
they were made. But while gateways drain a backlog, the ingest queue can hold seconds of work, and
an operator's ``sites show`` waited behind all of it. ``StoreThread`` keeps two queues on the same
thread: ``urgent`` (the operator API) is taken before the ``submit``-ted work (the core's ingests,
jobs), each queue in its own order. Nothing runs concurrently, so nothing about the store's
single-writer assumptions changes; only who waits.

Shutting down: ``shutdown()`` runs everything queued first (an executor's contract);
``shutdown(cancel_futures=True)`` is the node's stop: it takes no new work, the call
in hand (one transaction) finishes, everything still queued is cancelled (its caller
sees a cancelled future, so an ingest that never ran is never acknowledged and its
gateway sends it again), then ``last`` (e.g. closing the store) runs on the thread
and the thread ends. A stop therefore waits for at most one call, not the backlog.

``IngestQueue`` takes gateways' forwarded batches as they arrive and hands the store thread all of
those waiting (up to ``max_records``) as ONE call, so one transaction commits many gateways' batches:
while a transaction runs, the next one gathers. Each batch still gets its own result; if a joint
write fails, each batch is written alone, so one bad batch fails only itself.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from common.errors import StoreError

__all__ = ["IngestLanes", "IngestQueue", "StoreThread"]

_STOP_NOW, _URGENT, _NORMAL, _STOP = -1, 0, 1, 2


class StoreThread(concurrent.futures.Executor):
    def __init__(self, name: str = "store") -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any, Any, tuple, dict]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._stopped = False
        self.cancelled = 0  # calls dropped unrun by a shutdown(cancel_futures=True)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.urgent: concurrent.futures.Executor = _Urgent(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return self._put(_NORMAL, fn, args, kwargs)

    def _put(self, priority: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> concurrent.futures.Future[Any]:
        if self._stopped:
            raise RuntimeError("the store thread is shut down")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((priority, next(self._order), fut, fn, args, kwargs))
        return fut

    def _run(self) -> None:
        while True:
            priority, _, fut, fn, args, kwargs = self._queue.get()
            if priority == _STOP_NOW:
                self._cancel_queued()
            if priority in (_STOP, _STOP_NOW):
                if fn is not None:
                    fn()
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller through its future, as ThreadPoolExecutor does
                fut.set_exception(exc)

    def _cancel_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item[2] is not None and item[2].cancel():
                self.cancelled += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, last: Callable[[], Any] | None = None) -> None:
        """Stop taking work; with ``cancel_futures`` cancel what is queued and stop after the call in hand, else
        after everything queued. ``last`` runs on the thread before it ends."""
        if not self._stopped:
            self._stopped = True
            # _STOP sorts after everything queued, _STOP_NOW before it
            self._queue.put((_STOP_NOW if cancel_futures else _STOP, next(self._order), None, last, (), {}))
        if wait:
            self._thread.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end (after ``shutdown``); False if it is still running after ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


class _Urgent(concurrent.futures.Executor):
    def __init__(self, owner: StoreThread) -> None:
        self._owner = owner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return self._owner._put(_URGENT, fn, args, kwargs)


class IngestQueue:
    """Batches waiting for the store thread, written together by ``write_many(items) -> results``."""

    def __init__(self, executor: concurrent.futures.Executor, write_many: Callable[[list[Any]], Sequence[Any]], *,
                 max_records: int = 20_000) -> None:
        self._executor, self._write_many, self._max = executor, write_many, max_records
        self._lock = threading.Lock()
        self._pending: deque[tuple[Any, int, concurrent.futures.Future[Any]]] = deque()
        self._scheduled = False
        self.writes = 0  # calls made to write_many (batches per write = submitted / writes)

    @property
    def waiting(self) -> int:
        """Batches submitted and not yet taken by a write."""
        return len(self._pending)

    def submit(self, item: Any, records: int) -> concurrent.futures.Future[Any]:
        """Queue ``item`` (``records`` long); its future gets its own result once its transaction committed."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._pending.append((item, records, fut))
            start, self._scheduled = not self._scheduled, True
        if start:
            self._executor.submit(self._run)
        return fut

    def cancel_waiting(self) -> int:
        """Cancel every batch not yet taken by a write (a stop: never acknowledged, so resent); how many."""
        with self._lock:
            waiting = [fut for _, _, fut in self._pending]
            self._pending.clear()
        return sum(fut.cancel() for fut in waiting)

    def _run(self) -> None:  # on the store thread
        with self._lock:
            taken, n = [], 0
            while self._pending and (not taken or n + self._pending[0][1] <= self._max):
                item, records, fut = self._pending.popleft()
                taken.append((item, fut))
                n += records
            self._scheduled = bool(self._pending)
        if self._scheduled:
            try:
                self._executor.submit(self._run)  # behind whatever was queued meanwhile
            except RuntimeError:
                pass  # the store thread is stopping: what waits is never acknowledged, so it is resent
        taken = [(item, fut) for item, fut in taken if fut.set_running_or_notify_cancel()]
        if not taken:
            return
        self.writes += 1
        try:
            results = self._write_many([item for item, _ in taken])
        except StoreError as exc:
            if len(taken) == 1:
                taken[0][1].set_exception(exc)
                return
            for item, fut in taken:  # which one was it? each alone, so the others are stored
                try:
                    fut.set_result(self._write_many([item])[0])
                except BaseException as one:  # noqa: BLE001 - handed to its caller through its future
                    fut.set_exception(one)
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the callers through their futures
            for _, fut in taken:
                fut.set_exception(exc)
            return
        for (_, fut), result in zip(taken, results):
            fut.set_result(result)


class IngestLanes:
    """Gateways' batches over ``n`` writers: the store thread and ``n - 1`` ingest threads of their own, each an
    ``IngestQueue`` with its own database connection (PostgreSQL; SQLite has one writer, n = 1). A gateway's
    batches always go to the same lane, so they commit in the order they came; lanes commit side by side, one
    formatting its rows while the database writes another's (a lone store thread kept a PostgreSQL coordinator
    at half a core: 39k records/s with one lane, 73-78k with two, 71-86k with three, 84-92k with four, the machine then full)."""

    def __init__(self, store_thread: StoreThread, n: int, write_many: Callable[[list[Any]], Sequence[Any]], *,
                 max_records: int = 20_000) -> None:
        if n < 1:
            raise ValueError(f"ingest writers must be 1 or more, got {n}")
        self._main = store_thread
        self._extra = [StoreThread(f"ingest-{i}") for i in range(1, n)]
        self.lanes = [IngestQueue(e, write_many, max_records=max_records) for e in (store_thread, *self._extra)]
        self._dropped = 0

    def submit(self, key: str, item: Any, records: int) -> concurrent.futures.Future[Any]:
        """Queue ``item`` in ``key``'s lane (``key``: the gateway)."""
        return self.lanes[zlib.crc32(key.encode()) % len(self.lanes)].submit(item, records)

    @property
    def writes(self) -> int:
        """Transactions written, over every lane."""
        return sum(lane.writes for lane in self.lanes)

    @property
    def cancelled(self) -> int:
        """Batches and calls dropped unrun by the stop, over every lane."""
        return self._main.cancelled + sum(t.cancelled for t in self._extra) + self._dropped

    def shutdown(self, last: Callable[[], Any]) -> None:
        """The node's stop: every lane takes no new work, finishes the transaction in hand and drops what waits
        (never acknowledged: resent); then ``last`` (closing the store) runs on the store thread."""
        for thread in self._extra:
            thread.shutdown(wait=False, cancel_futures=True)
        self._dropped = sum(lane.cancel_waiting() for lane in self.lanes)

        def then() -> None:
            for thread in self._extra:
                thread.join()
            last()

        self._main.shutdown(wait=False, cancel_futures=True, last=then)

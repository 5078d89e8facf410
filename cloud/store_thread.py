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
"""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["StoreThread"]

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

"""The metrics follower's pacing: a step at a time of ``Store.follow_metrics`` (``cloud.store.fold``) on the
store thread, run by the leader only.

While gateways' batches keep coming (``IngestQueue.writes`` moved since the last step) it takes small steps
and at most a quarter of the thread's time, so acknowledgements come first; when they stop, big steps back to
back until it has caught up, then one look every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable

__all__ = ["MetricsFollower"]

log = logging.getLogger("edgefleet.cloud")
FOLLOW_ROWS, FOLLOW_BUSY_ROWS = 20_000, 2_000  # telemetry rows per step: idle, ingesting
FOLLOW_BUSY_SHARE = 3.0  # while ingesting, wait 3x the step's time: at most a quarter of the store thread


class MetricsFollower:
    def __init__(self, step: Callable[[int], int], executor: concurrent.futures.Executor, writes: Callable[[], int],
                 *, interval_s: float, running: Callable[[], bool]) -> None:
        self._step, self._executor, self._writes = step, executor, writes
        self.interval_s = interval_s
        self._running = running  # False once another coordinator leads (or the cloud stops)
        self._timer: asyncio.TimerHandle | None = None
        self._seen = 0

    def start(self) -> None:
        self.stop()
        self._next()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _next(self) -> None:
        loop = asyncio.get_running_loop()
        writes = self._writes()
        busy, self._seen = writes != self._seen, writes
        rows = FOLLOW_BUSY_ROWS if busy else FOLLOW_ROWS

        def step() -> tuple[int, float]:
            t0 = time.monotonic()
            return self._step(rows), time.monotonic() - t0

        def again(fut: asyncio.Future) -> None:
            if fut.cancelled() or not self._running():
                return
            delay = self.interval_s
            if fut.exception() is not None:
                log.error("the metrics follower failed", extra={"error": str(fut.exception())})
            elif busy:
                delay = max(delay, FOLLOW_BUSY_SHARE * fut.result()[1])
            elif fut.result()[0] >= rows:
                delay = 0.0  # idle and more to fold
            self._timer = loop.call_later(delay, self._next)

        loop.run_in_executor(self._executor, step).add_done_callback(again)

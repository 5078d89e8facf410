"""Runs a sans-IO core on asyncio: the one place where effects meet sockets, LMDB and the clock.

``NodeRunner.feed(event)`` asks the core for effects with the current time and
carries them out: sends go to the server socket or the upstream link, timers
become ``loop.call_later`` handles, appends and acks go to the durable queues
and come back as ``Persisted`` / ``PersistFailed`` events. Effects a tier adds
(sampling, the cloud store) are handled by callables passed in ``extra``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from common.durable_queue import DurableQueue
from common.effects import (
    UPSTREAM,
    AckQueue,
    Append,
    Effect,
    Event,
    LinkUp,
    Log,
    Persisted,
    PersistFailed,
    Reconnect,
    Send,
    SetTimer,
    TimerFired,
)
from common.errors import EdgeFleetError
from common.sockets import ServerSocket, UpstreamLink

__all__ = ["NodeRunner"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# a Log field named like a LogRecord attribute ("module", "name", "msg"...) makes logging raise KeyError:
# such a field is logged with a trailing underscore instead
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _log_fields(fields: dict[str, Any]) -> dict[str, Any]:
    if _RESERVED.isdisjoint(fields):
        return fields
    return {(f"{k}_" if k in _RESERVED else k): v for k, v in fields.items()}


class NodeRunner:
    """Drives one core; everything happens on the event loop's thread."""

    def __init__(
        self,
        core: Any,
        *,
        queues: dict[str, DurableQueue] | None = None,
        server: ServerSocket | None = None,
        upstream: UpstreamLink | None = None,
        extra: dict[type, Callable[[Any], None]] | None = None,
        clock: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
    ) -> None:
        self.core = core
        self.queues = queues or {}
        self.server = server
        self.upstream = upstream
        self.extra = extra or {}
        self.clock = clock
        self.log = log or logging.getLogger(type(core).__module__)
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writes: set[asyncio.Future[Any]] = set()  # appends and acks not yet committed
        self._stopped = False

    def feed(self, event: Event) -> None:
        if self._stopped:
            return
        for effect in self.core.handle(event, self.clock()):
            self._do(effect)

    def _do(self, effect: Effect) -> None:
        match effect:
            case Send(peer, msg):
                if peer == UPSTREAM:
                    assert self.upstream is not None
                    self.upstream.send(msg)
                else:
                    assert self.server is not None
                    self.server.send(peer, msg)
            case SetTimer(name, at):
                old = self._timers.pop(name, None)
                if old is not None:
                    old.cancel()
                delay = max(0.0, at - self.clock())
                self._timers[name] = asyncio.get_running_loop().call_later(delay, self.feed, TimerFired(name))
            case Append(queue, stream, payloads, token):
                fut = self.queues[queue].append_many(payloads, stream=stream)
                self._writes.add(fut)
                fut.add_done_callback(partial(self._persisted, token))  # one callback per append: it is per batch
            case AckQueue(queue, stream, up_to):
                fut = self.queues[queue].ack(up_to, stream=stream)
                self._writes.add(fut)
                fut.add_done_callback(self._ack_done)
            case Reconnect(delay):
                self._spawn(self._reconnect(delay))
            case Log(level, event, fields):
                self.log.log(_LEVELS.get(level, logging.INFO), event, extra=_log_fields(fields))
            case _:
                self.extra[type(effect)](effect)

    def _persisted(self, token: Any, fut: asyncio.Future[list[int]]) -> None:
        self._writes.discard(fut)
        exc = fut.exception()
        if exc is None:
            self.feed(Persisted(token, fut.result()))
        elif isinstance(exc, EdgeFleetError):
            self.feed(PersistFailed(token, exc))
        else:
            raise exc

    def _ack_done(self, fut: asyncio.Future[int]) -> None:
        self._writes.discard(fut)
        exc = fut.exception()
        if exc is not None:
            # entries stay in the queue and are acknowledged again by the next ack; say so loudly
            self.log.error("queue ack failed", extra={"error": str(exc)})

    async def _reconnect(self, delay: float) -> None:
        assert self.upstream is not None
        await self.upstream.reconnect(delay)
        self.feed(LinkUp())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel timers and tasks, let every write already submitted commit and reach the core, then go quiet."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
            await asyncio.sleep(0)  # their done-callbacks feed the core
        self._stopped = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

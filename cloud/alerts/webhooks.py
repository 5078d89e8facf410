"""Deliver alert events to webhooks: HTTP POST of JSON, with retries and backoff.

One bounded queue and one worker task per URL, so a webhook that is down or
slow delays only its own events: never another URL's, and never the caller,
whose ``submit(event)`` only enqueues (it is a plain function, not a coroutine).

Per event a worker makes up to ``max_attempts`` POSTs. A 2xx is delivered. A
connection error, a timeout, 408, 429 or a 5xx is retried after the URL's
``Backoff`` delay (reset after each finished event); any other status (a 4xx: the
receiver refuses this body) fails at once, since sending it again cannot help.
Each POST carries ``Idempotency-Key: <alert_id>:<event>`` so a receiver can drop
the duplicate a retry after a lost response produces.

Nothing is lost silently; every event submitted to a URL ends in exactly one
counter of that URL (``stats[url]``):

    delivered   a 2xx answer
    failed      attempts exhausted or refused by the receiver (``last_error`` says why)
    dropped     its queue was full at submit, or ``stop()`` came before it was finished

``start()`` creates the workers and ``stop()`` ends them (optionally after
letting the queues drain); ``async with WebhookSender(...)`` does both.
Use from the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from common.backoff import Backoff
from common.errors import ConfigError

__all__ = ["WebhookSender", "WebhookStats"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 429})


def _default_backoff() -> Backoff:
    return Backoff(initial_s=1.0, max_s=60.0, multiplier=2.0, rng=random.Random())


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0  # POSTs beyond the first of an event
    queued: int = 0  # waiting now, plus the one being sent
    last_error: str | None = None


class WebhookSender:
    """``submit(event)`` to every URL; each URL's worker POSTs, retries and counts."""

    def __init__(
        self,
        urls: Iterable[str],
        *,
        client: httpx.AsyncClient,
        max_attempts: int = 5,
        backoff: Callable[[], Backoff] = _default_backoff,
        queue_size: int = 1000,
        timeout_s: float = 10.0,
    ) -> None:
        self.urls = list(dict.fromkeys(urls))
        for url in self.urls:
            try:
                parsed = httpx.URL(url)
            except httpx.InvalidURL as exc:
                raise ConfigError(f"webhook URL {url!r} is not a valid URL: {exc}") from exc
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ConfigError(f"webhook URL {url!r} must be http:// or https:// with a host")
        if max_attempts < 1:
            raise ConfigError(f"webhook max_attempts must be >= 1, got {max_attempts!r}")
        if queue_size < 1:
            raise ConfigError(f"webhook queue_size must be >= 1, got {queue_size!r}")
        self.client = client
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.stats = {url: WebhookStats() for url in self.urls}
        self._queues: dict[str, asyncio.Queue[tuple[bytes, dict[str, str]]]] = {
            url: asyncio.Queue(maxsize=queue_size) for url in self.urls
        }
        self._backoff = {url: backoff() for url in self.urls}
        self._tasks: list[asyncio.Task[None]] = []

    # --- the caller's side ----------------------------------------------------------------------

    def submit(self, event: Any) -> int:
        """Queue ``event`` (an ``AlertEvent`` or a mapping) for every URL; return how many took it."""
        payload = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"content-type": "application/json"}
        if isinstance(payload, Mapping) and "alert_id" in payload:
            headers["idempotency-key"] = f"{payload['alert_id']}:{payload.get('event', '')}"
        taken = 0
        for url, queue in self._queues.items():
            try:
                queue.put_nowait((body, headers))
            except asyncio.QueueFull:
                self.stats[url].dropped += 1
                log.warning("webhook %s queue is full: event dropped", url, extra={"url": url})
                continue
            self.stats[url].queued += 1
            taken += 1
        return taken

    @property
    def totals(self) -> WebhookStats:
        """The counters summed over every URL."""
        out = WebhookStats()
        for s in self.stats.values():
            out.delivered += s.delivered
            out.failed += s.failed
            out.dropped += s.dropped
            out.retries += s.retries
            out.queued += s.queued
        return out

    async def join(self, url: str | None = None) -> None:
        """Wait until ``url``'s queue (or every queue) has no event left to finish."""
        queues = [self._queues[url]] if url is not None else list(self._queues.values())
        await asyncio.gather(*(q.join() for q in queues))

    # --- tasks --------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            raise RuntimeError("webhook sender already started")
        self._tasks = [asyncio.create_task(self._worker(url), name=f"webhook {url}") for url in self.urls]

    async def stop(self, drain_s: float = 0.0) -> None:
        """Give the queues up to ``drain_s`` to empty, then end the workers; what is left counts as dropped."""
        if drain_s > 0:
            try:
                await asyncio.wait_for(self.join(), drain_s)
            except TimeoutError:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for url, queue in self._queues.items():
            while not queue.empty():
                queue.get_nowait()
                queue.task_done()
            stats = self.stats[url]
            stats.dropped += stats.queued
            stats.queued = 0

    async def __aenter__(self) -> WebhookSender:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the worker -----------------------------------------------------------------------------

    async def _worker(self, url: str) -> None:
        queue, stats, backoff = self._queues[url], self.stats[url], self._backoff[url]
        while True:
            body, headers = await queue.get()
            try:
                delivered = await self._deliver(url, body, headers, stats, backoff)
            except asyncio.CancelledError:  # stop(): it counts the event as dropped
                queue.task_done()
                raise
            except Exception as exc:  # a bug, or a closed client: fail this event loudly, keep the URL served
                log.exception("webhook %s: unexpected error delivering an event", url, extra={"url": url})
                stats.last_error = f"{type(exc).__name__}: {exc}"
                delivered = False
            stats.queued -= 1
            if delivered:
                stats.delivered += 1
            else:
                stats.failed += 1
                log.warning("webhook %s: event failed: %s", url, stats.last_error, extra={"url": url})
            backoff.reset()
            queue.task_done()  # last, so join() returns only once the counters are final

    async def _deliver(
        self, url: str, body: bytes, headers: dict[str, str], stats: WebhookStats, backoff: Backoff
    ) -> bool:
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                stats.retries += 1
                await asyncio.sleep(backoff.next_delay())
            try:
                response = await self.client.post(url, content=body, headers=headers, timeout=self.timeout_s)
            except httpx.HTTPError as exc:  # connection refused, reset, timeout, ...
                stats.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            status = response.status_code
            if 200 <= status < 300:
                return True
            stats.last_error = f"HTTP {status}"
            if not (status >= 500 or status in _RETRY_STATUS):
                return False  # the receiver refuses this body: sending it again cannot help
        return False

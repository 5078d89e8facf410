"""The asking side of a firmware transfer on asyncio: offers and chunked downloads over one upstream link.

    fetcher = Fetcher(link.send, is_up=lambda: core.uplink.up, window=4)
    offer = await fetcher.offer("2.1.0", "sim-board-1", bases=["2.0.0"])   # asked again until answered
    path = await fetcher.fetch(plan, downloads / f"{plan.artifact}.part", final)  # one transfer per artifact
    fetcher.on_message(msg)    # the driver hands it every FirmwareOffer and ChunkData from upstream

The chunk logic (credit window, hash check per chunk, resume, backoff) is ``Download``, sans-IO;
this class gives it a clock, timers, the partial file (``PartialFile``, written on one thread in
order) and the link. Two callers fetching the same artifact share one transfer (single flight).
When the link comes back (``is_up`` turns true) the requests lost with it are asked again at once
rather than after their timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import TransferError
from common.protocol import ChunkData, FirmwareOffer, Message, OfferRequest
from common.shaping import TokenBucket
from common.transfer.download import Download, Plan, Verdict
from common.transfer.partial import PartialFile

__all__ = ["Fetcher"]

log = logging.getLogger("edgefleet.transfer")

_POLL_S = 0.2  # how often the link state is looked at, and timers re-armed


class Fetcher:
    def __init__(
        self,
        send: Callable[[Message], bool],
        *,
        is_up: Callable[[], bool] = lambda: True,
        window: int = 4,
        timeout_s: float = 10.0,
        offer_timeout_s: float = 5.0,
        rate_bytes_per_s: float = 0.0,
        on_failure: Callable[[str, int, str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.send = send
        self.is_up = is_up
        self.window = window
        self.timeout_s = timeout_s
        self.offer_timeout_s = offer_timeout_s
        self.rate = rate_bytes_per_s
        self.on_failure = on_failure
        self.rng = rng or random.Random()
        self.counters = {"offers": 0, "chunks_received": 0, "chunks_resent": 0, "bad_chunks": 0, "bytes_received": 0,
                         "duplicates": 0, "resumed_chunks": 0}
        self._ids = itertools.count(int(time.time() * 1000) % 1_000_000_000)
        self._offers: dict[int, asyncio.Future[FirmwareOffer]] = {}
        self._active: dict[str, _Active] = {}
        self._flights: dict[str, asyncio.Future[Path]] = {}
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunks")
        self._was_up = True
        self._poller: asyncio.TimerHandle | None = None

    # -- offers -------------------------------------------------------------------------

    async def offer(self, version: str, hw: str, bases: list[str], *, attempts: int = 0) -> FirmwareOffer:
        """The upstream's offer for ``version``; asked again every ``offer_timeout_s`` (forever if
        ``attempts`` is 0) until one arrives. Raises ``TransferError`` if the offer says why not."""
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        fut: asyncio.Future[FirmwareOffer] = loop.create_future()
        self._offers[request_id] = fut
        try:
            for attempt in itertools.count(1):
                self.send(OfferRequest(request_id, version, hw, list(bases)))
                try:
                    offer = await asyncio.wait_for(asyncio.shield(fut), self.offer_timeout_s)
                    break
                except asyncio.TimeoutError:
                    if attempts and attempt >= attempts:
                        raise TransferError(version, f"no offer for {version} after {attempt} requests; is the link up?") from None
        finally:
            self._offers.pop(request_id, None)
        self.counters["offers"] += 1
        if offer.error:
            raise TransferError(offer.artifact or version, f"no offer for release {version}: {offer.error}")
        return offer

    # -- downloads ------------------------------------------------------------------------

    async def fetch(self, plan: Plan, part: Path, final: Path) -> Path:
        """``final`` once it holds the artifact (verified chunk by chunk, then whole). One transfer per
        artifact however many callers ask at once; a transfer already on disk resumes where it stopped."""
        if final.exists():
            return final
        flight = self._flights.get(plan.artifact)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(plan, part, final))
            self._flights[plan.artifact] = flight
            flight.add_done_callback(lambda _: self._flights.pop(plan.artifact, None))
        return await asyncio.shield(flight)

    async def _fetch(self, plan: Plan, part_path: Path, final: Path) -> Path:
        loop = asyncio.get_running_loop()
        part = await loop.run_in_executor(self._writer, PartialFile, part_path, plan)
        self.counters["resumed_chunks"] += len(part.have)
        bucket = TokenBucket(self.rate, max(plan.chunk_size, 1)) if self.rate > 0 else None
        dl = Download(plan, set(part.have), window=self.window, timeout_s=self.timeout_s, bucket=bucket, rng=self.rng)
        active = _Active(dl, part, loop.create_future())
        self._active[plan.artifact] = active
        self._ensure_poller()
        try:
            self._send_all(dl.pump(loop.time()))
            self._arm(active)
            if dl.done:
                active.done.set_result(None)
            await active.done
            return await loop.run_in_executor(self._writer, part.finish, final)
        except BaseException:
            await loop.run_in_executor(self._writer, part.close)
            raise
        finally:
            self._active.pop(plan.artifact, None)
            if active.timer is not None:
                active.timer.cancel()
            self.counters["chunks_resent"] += dl.resent
            self.counters["bad_chunks"] += dl.bad_chunks

    def on_message(self, msg: Any) -> None:
        """Hand over a FirmwareOffer or ChunkData from upstream (anything else is ignored)."""
        if isinstance(msg, FirmwareOffer):
            fut = self._offers.get(msg.request_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        if not isinstance(msg, ChunkData):
            return
        active = self._active.get(msg.artifact)
        if active is None or active.done.done():
            self.counters["duplicates"] += 1
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        dl = active.download
        if msg.error:
            dl.refused(msg.index, msg.error, now)
            self._arm(active)
            return
        try:
            verdict = dl.received(msg.index, msg.data, now)
        except TransferError as exc:  # one chunk failed too often: this download is over
            self._report(dl)
            active.done.set_exception(exc)
            return
        if verdict is Verdict.BAD:
            self._report(dl)
            log.warning("chunk failed its hash; asking again after a backoff",
                        extra={"artifact": msg.artifact[:16], "chunk": msg.index})
        elif verdict is Verdict.STALE:
            self.counters["duplicates"] += 1
        else:
            self.counters["chunks_received"] += 1
            self.counters["bytes_received"] += len(msg.data)
            loop.run_in_executor(self._writer, active.part.write, msg.index, msg.data).add_done_callback(
                lambda f, i=msg.index: self._written(active, i, f)
            )
        self._send_all(dl.pump(now))
        self._arm(active)

    def _written(self, active: _Active, index: int, fut: concurrent.futures.Future[Any] | asyncio.Future[Any]) -> None:
        if active.done.done():
            return
        exc = fut.exception()
        if exc is not None:
            active.download.store_failed(index)
            active.done.set_exception(exc)
            return
        active.download.stored(index)
        if active.download.done:
            active.done.set_result(None)
            return
        self._send_all(active.download.pump(asyncio.get_running_loop().time()))
        self._arm(active)

    def _report(self, dl: Download) -> None:
        while dl.failures:
            index, cause = dl.failures.pop(0)
            if self.on_failure is not None:
                self.on_failure(dl.plan.artifact, index, cause)

    # -- timers and link --------------------------------------------------------------------

    def _send_all(self, requests: list[Message]) -> None:
        for r in requests:
            self.send(r)

    def _arm(self, active: _Active) -> None:
        loop = asyncio.get_running_loop()
        if active.timer is not None:
            active.timer.cancel()
            active.timer = None
        wake = active.download.wake_at()
        if wake is not None and not active.done.done():
            active.timer = loop.call_at(wake, self._tick, active)

    def _tick(self, active: _Active) -> None:
        active.timer = None
        if active.done.done():
            return
        self._report(active.download)
        self._send_all(active.download.tick(asyncio.get_running_loop().time()))
        self._arm(active)

    def _ensure_poller(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().call_later(_POLL_S, self._poll)

    def _poll(self) -> None:
        self._poller = None
        up = self.is_up()
        if up and not self._was_up:
            now = asyncio.get_running_loop().time()
            for active in self._active.values():
                self._send_all(active.download.link_up(now))
                self._arm(active)
        self._was_up = up
        if self._active or self._offers:
            self._ensure_poller()

    def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for active in self._active.values():
            if active.timer is not None:
                active.timer.cancel()
        self._writer.shutdown(wait=True)


class _Active:
    __slots__ = ("done", "download", "part", "timer")

    def __init__(self, download: Download, part: PartialFile, done: asyncio.Future[None]) -> None:
        self.download, self.part, self.done = download, part, done
        self.timer: asyncio.TimerHandle | None = None

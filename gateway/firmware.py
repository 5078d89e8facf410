"""The gateway's firmware service: each release crosses the site's WAN once, as a delta when it can.

A device asks (``OfferRequest``) for release V, saying the version it runs. The gateway first makes
sure it holds V's full image (``prepare``, single flight per release: twenty devices asking at once
cause one transfer from the cloud):

- it asks the cloud with every version whose full image its cache holds; the cloud offers the
  smallest delta from one of them, or the full image;
- a delta is fetched (chunked, verified, resumable), applied to the cached old image, and the
  result checked against the signed manifest's SHA-256 before it enters the cache as V's image.

Then it answers the device with the smallest thing that rebuilds V from what the device runs: the
cloud's delta if it holds that one, else a delta it makes itself from its cached full images (on a
worker thread, once per pair, kept in the cache), else the full image. Whatever a device gets, it
checks the rebuilt image against the signed manifest before installing: a delta the gateway made
is no more trusted than the gateway. Chunks are served from the cache (``ChunkRequest``). The
requests are taken and answered by the responder every hop shares (``common.transfer.responder``);
this class is its ``OfferSource`` at a site.

``prefetch`` fetches a release ahead of a rollout's window and pins it for that rollout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.effects import Firmware
from common.errors import CacheFull, DeltaError, FirmwareError, TransferError
from common.fileio import replace_file
from common.firmware.chunks import hash_image
from common.firmware.manifest import SignedManifest
from common.protocol import ChunkData, ChunkRequest, FirmwareOffer, Message, OfferRequest
from common.transfer.fetcher import Fetcher
from common.transfer.download import Plan
from common.transfer.responder import Responder
from common.transfer.serve import no_offer, read_chunk
from gateway.site_cache import SiteCache

__all__ = ["LOCAL_DELTA_CHUNK", "SiteFirmware"]

log = logging.getLogger("edgefleet.gateway.firmware")

LOCAL_DELTA_CHUNK = 64 * 1024


class SiteFirmware:
    def __init__(
        self,
        cache: SiteCache,
        fetcher: Fetcher,
        send_down: Callable[[str, Message], bool],
        *,
        verify: Callable[[bytes, str], Any] | None = None,
        delta_budget_s: float = 110.0,
    ) -> None:
        self.cache, self.fetcher = cache, fetcher
        self.verify = verify  # checks a signed manifest against the gateway's release keys, if it has any
        self.delta_budget_s = delta_budget_s
        self._counters = {"cloud_fetches": 0, "local_deltas": 0, "rebuilt_from_delta": 0, "refused": 0, "prefetched": 0}
        self.responder = Responder(self, send_down)
        self._io = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache")
        self._prepared: dict[tuple[str, str], asyncio.Future[tuple[str, bytes]]] = {}
        self._deltas: dict[tuple[str, str], asyncio.Future[str | None]] = {}

    @property
    def counters(self) -> dict[str, int]:
        """What devices were sent (offers, chunks and their bytes) and what the site cache did."""
        r = self.responder.counters
        return {"device_offers": r["offers"], "device_chunks": r["chunks"], "device_bytes": r["chunk_bytes"],
                **self._counters}

    # -- messages ------------------------------------------------------------------------------

    def handle(self, effect: Firmware) -> None:
        if not effect.peer:  # from the cloud: the fetcher's
            self.fetcher.on_message(effect.msg)
            return
        self.responder.handle(effect)  # from a device: answered by the shared responder, with offer() and chunk()

    async def chunk(self, req: ChunkRequest) -> ChunkData:
        loop = asyncio.get_running_loop()
        self.cache.readers[req.artifact] = self.cache.readers.get(req.artifact, 0) + 1
        try:
            if not await loop.run_in_executor(self._io, self.cache.has, req.artifact):
                return ChunkData(req.artifact, req.index, b"", "not-held: ask for an offer first")
            reply = await loop.run_in_executor(None, read_chunk, self.cache.path(req.artifact), req)
            if req.index == 0:
                await loop.run_in_executor(self._io, self.cache.touch, req.artifact)
            return reply
        finally:
            self.cache.readers[req.artifact] -= 1
            if not self.cache.readers[req.artifact]:
                del self.cache.readers[req.artifact]

    # -- offers to devices -------------------------------------------------------------------------

    async def offer(self, device_id: str, req: OfferRequest) -> FirmwareOffer:
        try:
            image_sha, manifest = await self.prepare(req.version, req.hw)
        except (FirmwareError, DeltaError, OSError) as exc:
            self._counters["refused"] += 1
            log.warning("no offer for a device", extra={"device": device_id, "release": req.version, "error": str(exc)})
            return no_offer(req, str(exc))
        m = SignedManifest.from_bytes(manifest).unverified()
        for base in req.bases:
            delta = await self._delta_to(base, req.hw, image_sha, m)
            if delta is not None:
                sha, entry = delta
                return FirmwareOffer(req.request_id, req.version, manifest, "delta", sha, base, entry.get("method", ""),
                                     entry["size"], LOCAL_DELTA_CHUNK, entry["chunks"], "")
        return FirmwareOffer(req.request_id, req.version, manifest, "full", image_sha, "", "", m.size, m.chunk_size,
                             list(m.chunks), "")

    async def _delta_to(self, base: str, hw: str, image_sha: str, m: Any) -> tuple[str, dict[str, Any]] | None:
        """A delta from ``base``'s image to the release image, held or made here; None if none is worth it."""
        loop = asyncio.get_running_loop()
        base_sha = await loop.run_in_executor(self._io, self.cache.image_for, base, hw)
        if base_sha is None or base_sha == image_sha:
            return None
        key = (base_sha, image_sha)
        flight = self._deltas.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._make_delta(base_sha, image_sha))
            self._deltas[key] = flight
            flight.add_done_callback(lambda f: self._deltas.pop(key, None) if f.exception() or f.result() is None else None)
        sha = await asyncio.shield(flight)
        if sha is None:
            return None
        entry = await loop.run_in_executor(self._io, self.cache.get, sha)
        return (sha, entry) if entry else None

    async def _make_delta(self, base_sha: str, image_sha: str) -> str | None:
        """Devices are waiting: the fast candidates only (bsdiff4 over the changed blocks with a local
        window, and zstd patch-from), the smaller kept; the cloud's slower search is for the WAN."""
        from common.delta import make_delta
        from common.delta.engine import BLOCKS, ZSTD

        loop = asyncio.get_running_loop()
        held = await loop.run_in_executor(self._io, self.cache.delta_for, base_sha, image_sha)
        if held and await loop.run_in_executor(self._io, self.cache.has, held):
            entry = await loop.run_in_executor(self._io, self.cache.get, held)
            if entry and not entry["chunks"]:
                return None  # recorded as not worth it
            return held
        tmp = self.cache.objects / f"delta-{base_sha[:16]}-{image_sha[:16]}.tmp"
        call = functools.partial(make_delta, str(self.cache.path(base_sha)), str(self.cache.path(image_sha)), str(tmp),
                                 time_budget_s=self.delta_budget_s, workers=2, methods=(BLOCKS, ZSTD), blocks_window="local")
        try:
            result = await loop.run_in_executor(None, call)
        except DeltaError as exc:  # DeltaNotWorthIt included: devices on that version get the full image
            log.info("no local delta", extra={"from": base_sha[:16], "to": image_sha[:16], "why": str(exc)})
            return None
        size, sha, chunks = await loop.run_in_executor(None, hash_image, tmp, LOCAL_DELTA_CHUNK)

        def admit() -> None:
            self.cache.make_room(size, keep=frozenset({base_sha, image_sha}))
            replace_file(tmp, self.cache.path(sha))  # durable before the index admits it
            self.cache.admit(sha, size, kind="delta", from_sha=base_sha, to_sha=image_sha, chunks=chunks)
            self.cache.pin_like(image_sha, sha)

        try:
            await loop.run_in_executor(self._io, admit)
        except CacheFull:
            tmp.unlink(missing_ok=True)
            return None
        self._counters["local_deltas"] += 1
        log.info("made a local delta", extra={"method": result.method, "bytes": size, "image_bytes": result.new_size})
        return sha

    # -- the release image, once per site ----------------------------------------------------------------

    async def prepare(self, version: str, hw: str) -> tuple[str, bytes]:
        """``(image sha, signed manifest)`` of release ``version``, fetching it from the cloud once."""
        key = (version, hw)
        flight = self._prepared.get(key)
        if flight is None or (flight.done() and flight.exception() is not None):
            flight = asyncio.ensure_future(self._prepare(version, hw))
            self._prepared[key] = flight
        return await asyncio.shield(flight)

    async def _prepare(self, version: str, hw: str) -> tuple[str, bytes]:
        loop = asyncio.get_running_loop()
        held = await loop.run_in_executor(self._io, self.cache.image_for, version, hw)
        manifest = await loop.run_in_executor(self._io, self.cache.manifest, version)
        if held and manifest:
            return held, manifest
        bases = await loop.run_in_executor(self._io, self.cache.versions, hw)
        offer = await self.fetcher.offer(version, hw, bases)
        m = SignedManifest.from_bytes(offer.manifest).unverified()
        if self.verify is not None:
            m = self.verify(offer.manifest, hw)  # ManifestError: refused before a byte is fetched
        if m.version != version or hw not in m.hw:
            raise TransferError(offer.artifact, f"the cloud offered manifest {m.version} for {version}/{hw}")
        self._counters["cloud_fetches"] += 1
        if offer.kind == "delta":
            base_sha = await loop.run_in_executor(self._io, self.cache.image_for, offer.from_version, hw)
            signed = m.delta_from(offer.from_version)
            if base_sha is None or signed is None or signed.sha256 != offer.artifact:
                raise TransferError(offer.artifact, f"the cloud offered a delta from {offer.from_version} that this gateway cannot use")
            plan = Plan(offer.artifact, offer.size, offer.chunk_size, tuple(offer.chunks))
            delta_path = await self._download(plan, keep=frozenset({base_sha}))
            image_sha = await self._rebuild(base_sha, delta_path, m, offer.manifest)
            await loop.run_in_executor(self._io, self._admit_delta, offer, base_sha, image_sha)
            self._counters["rebuilt_from_delta"] += 1
            return image_sha, offer.manifest
        if offer.artifact != m.sha256 or tuple(offer.chunks) != tuple(m.chunks) or offer.chunk_size != m.chunk_size:
            raise TransferError(offer.artifact, "the cloud's offer does not match its signed manifest")
        plan = Plan(m.sha256, m.size, m.chunk_size, tuple(m.chunks))
        await self._download(plan)
        await loop.run_in_executor(
            self._io, functools.partial(self.cache.admit, m.sha256, m.size, kind="image", version=m.version, hw=tuple(m.hw),
                                        manifest=offer.manifest))
        return m.sha256, offer.manifest

    async def _download(self, plan: Plan, keep: frozenset[str] = frozenset()) -> Path:
        loop = asyncio.get_running_loop()
        final = self.cache.path(plan.artifact)
        if await loop.run_in_executor(self._io, self.cache.has, plan.artifact):
            return final
        await loop.run_in_executor(self._io, functools.partial(self.cache.make_room, plan.size, reserve_for=plan.artifact,
                                                               keep=keep))
        try:
            return await self.fetcher.fetch(plan, self.cache.part_path(plan.artifact), final)
        except BaseException:
            self.cache.release(plan.artifact)
            raise

    def _admit_delta(self, offer: FirmwareOffer, base_sha: str, image_sha: str) -> None:
        self.cache.admit(offer.artifact, offer.size, kind="delta", from_sha=base_sha, to_sha=image_sha,
                         chunks=list(offer.chunks))

    async def _rebuild(self, base_sha: str, delta_path: Path, m: Any, manifest: bytes) -> str:
        from common.delta import apply_delta

        loop = asyncio.get_running_loop()
        tmp = self.cache.objects / f"{m.sha256}.rebuild"
        await loop.run_in_executor(self._io, functools.partial(self.cache.make_room, m.size, reserve_for=m.sha256,
                                                               keep=frozenset({base_sha, delta_path.name})))
        try:
            # the signed manifest's size and SHA-256: a header that disagrees is refused before a byte is written
            apply = functools.partial(apply_delta, self.cache.path(base_sha), delta_path, tmp, expect_size=m.size,
                                      expect_sha256=m.sha256)
            result = await loop.run_in_executor(None, apply)
            if (result.new_size, result.new_sha256) != (m.size, m.sha256):
                raise TransferError(m.sha256, f"the delta rebuilt {result.new_sha256[:16]}..., not release {m.version}'s image")

            def admit() -> None:
                replace_file(tmp, self.cache.path(m.sha256))  # durable before the index admits it
                self.cache.admit(m.sha256, m.size, kind="image", version=m.version, hw=tuple(m.hw), manifest=manifest)

            await loop.run_in_executor(self._io, admit)
        except BaseException:
            self.cache.release(m.sha256)
            tmp.unlink(missing_ok=True)
            raise
        return m.sha256

    # -- rollouts ----------------------------------------------------------------------------------------

    async def prefetch(self, version: str, hw: str, holder: str) -> str:
        """Fetch release ``version`` now (before a rollout's window opens) and pin it for ``holder``."""
        sha, _ = await self.prepare(version, hw)
        await asyncio.get_running_loop().run_in_executor(self._io, self.cache.pin, sha, holder)
        self._counters["prefetched"] += 1
        return sha

    async def release_pins(self, holder: str) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._io, self.cache.unpin_all, holder)

    async def stop(self) -> None:
        await self.responder.stop()
        self.fetcher.close()
        self._io.shutdown(wait=True)

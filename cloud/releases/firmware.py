"""The cloud's side of firmware transfer: offers to gateways, and chunks of images and deltas.

A gateway asks for a release with the versions it holds full images of (``OfferRequest.bases``).
``choose_offer`` answers with the smallest published delta from one of them, or else the full
image; the offer carries the signed manifest, so the gateway (and each device after it) can check
everything it then fetches. Chunks are read from the artifact store on a thread. The requests are
taken and answered by the responder every hop shares (``common.transfer.responder``); ``counters``
count what crossed to gateways (``bytes_sent`` is the encoded size of every offer and chunk sent):
the WAN traffic firmware costs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from cloud.releases.artifacts import ArtifactStore
from cloud.store.releases import ReleaseRecords
from common.effects import Firmware
from common.errors import StoreError
from common.firmware.chunks import hash_image
from common.firmware.manifest import SignedManifest
from common.protocol import ChunkData, ChunkRequest, FirmwareOffer, Message, OfferRequest
from common.transfer.responder import Responder
from common.transfer.serve import no_offer, read_chunk

__all__ = ["DELTA_CHUNK", "FirmwareService", "choose_offer"]

log = logging.getLogger("edgefleet.cloud.firmware")

DELTA_CHUNK = 64 * 1024  # a delta's chunks: small, so a cut costs little; its hashes travel in the offer


def choose_offer(release: Mapping[str, Any] | None, version: str, hw: str, bases: list[str]) -> dict[str, Any]:
    """What to offer for ``version``: ``{"error": ...}`` or the artifact's kind, sha256, size, from_version, method."""
    if release is None:
        return {"error": f"no release {version!r}"}
    if release["state"] != "published" or not release.get("signed_manifest"):
        return {"error": f"release {version} is not published (its manifest is not signed yet)"}
    if hw not in release["hw"]:
        return {"error": f"release {version} is not for hardware {hw!r} (it is for {', '.join(release['hw'])})"}
    offered = [d for d in release["deltas"] if d["status"] == "offered" and d["from_version"] in bases and d["sha256"]]
    if offered:
        best = min(offered, key=lambda d: d["size"])
        return {"kind": "delta", "sha256": best["sha256"], "size": best["size"], "from_version": best["from_version"],
                "method": best["method"] or ""}
    return {"kind": "full", "sha256": release["image_sha256"], "size": release["size"], "from_version": "", "method": ""}


class FirmwareService:
    """The cloud's ``OfferSource``: offers from the release records, chunks from the artifact store; the
    shared ``common.transfer.responder.Responder`` answers the gateways with them."""

    def __init__(
        self,
        releases: ReleaseRecords,
        artifacts: ArtifactStore,
        *,
        store_executor: Executor,
        send: Callable[[str, Message], bool],
    ) -> None:
        self.releases, self.artifacts, self.store_executor = releases, artifacts, store_executor
        self.responder = Responder(self, send, count_frames=True)
        self.refused_offers = 0
        self._delta_chunks: dict[str, list[str]] = {}

    def handle(self, effect: Firmware) -> None:
        """A request from a gateway: answered on the loop once its store read or file read is done."""
        self.responder.handle(effect)

    @property
    def counters(self) -> dict[str, int]:
        """``offers`` and ``chunks_sent`` (answers sent), ``bytes_sent`` (their encoded size), ``refused``."""
        r = self.responder.counters
        return {"offers": r["offers"], "chunks_sent": r["chunks"] + r["chunk_errors"], "bytes_sent": r["frame_bytes"],
                "refused": self.refused_offers + r["malformed"]}

    @property
    def sent_by_gateway(self) -> dict[str, int]:
        """Encoded bytes of the answers sent to each gateway."""
        return self.responder.by_node

    async def offer(self, node_id: str, req: OfferRequest) -> FirmwareOffer:
        loop = asyncio.get_running_loop()
        try:
            release = await loop.run_in_executor(self.store_executor, self.releases.get_release, req.version)
        except StoreError as exc:
            return no_offer(req, f"the store could not be read ({exc}); ask again")
        choice = choose_offer(release, req.version, req.hw, req.bases)
        if "error" in choice:
            self.refused_offers += 1
            return no_offer(req, choice["error"])
        assert release is not None
        manifest = release["signed_manifest"].encode("ascii")
        if choice["kind"] == "full":
            m = SignedManifest.from_bytes(manifest).unverified()
            chunk_size, chunks = m.chunk_size, list(m.chunks)
        else:
            chunk_size, chunks = DELTA_CHUNK, await self._chunks_of(choice["sha256"])
        return FirmwareOffer(req.request_id, req.version, manifest, choice["kind"], choice["sha256"], choice["from_version"],
                             choice["method"], choice["size"], chunk_size, chunks, "")

    async def _chunks_of(self, sha256: str) -> list[str]:
        if sha256 not in self._delta_chunks:
            path = self.artifacts.path(sha256)
            _, _, chunks = await asyncio.get_running_loop().run_in_executor(None, hash_image, path, DELTA_CHUNK)
            self._delta_chunks[sha256] = chunks
        return self._delta_chunks[sha256]

    async def chunk(self, req: ChunkRequest) -> ChunkData:
        return await asyncio.get_running_loop().run_in_executor(None, read_chunk, self.artifacts.path(req.artifact), req)

    async def stop(self) -> None:
        await self.responder.stop()

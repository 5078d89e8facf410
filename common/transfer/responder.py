"""The answering side of firmware transfer, one for every hop: the cloud answers gateways, a gateway devices.

    responder = Responder(source, server.send, count_frames=True)
    responder.handle(effect)          # a Firmware effect: OfferRequest or ChunkRequest from a peer
    responder.counters                # offers, chunks, chunk_errors, chunk_bytes, frame_bytes, malformed
    await responder.stop()

Each request is answered on its own task, so a slow store read or file read never holds up
the next one. A chunk request that is not well formed (``serve.check_request``) is answered
with its error here; everything else is the ``source``'s: what to offer for a release (the
cloud: the smallest published delta from a version the gateway holds, else the full image;
a gateway: from its site cache) and where the chunk's bytes are. Only answers the peer was
sent are counted; with ``count_frames`` each answer's encoded size too, in total and per
asking node (``by_node``): the WAN bytes firmware costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from common.effects import Firmware
from common.protocol import ChunkData, ChunkRequest, FirmwareOffer, Message, OfferRequest, encode
from common.transfer.serve import check_request

__all__ = ["OfferSource", "Responder"]


class OfferSource(Protocol):
    """What a tier serves: its offers and its chunks."""

    async def offer(self, node_id: str, req: OfferRequest) -> FirmwareOffer:
        """The offer for ``req`` from ``node_id`` (an offer with ``error`` set when there is nothing to offer)."""
        ...

    async def chunk(self, req: ChunkRequest) -> ChunkData:
        """Chunk ``req.index`` of ``req.artifact`` (the request is well formed), or a ``ChunkData`` with ``error``."""
        ...


class Responder:
    def __init__(self, source: OfferSource, send: Callable[[str, Message], bool], *, count_frames: bool = False) -> None:
        self.source, self._send, self._count_frames = source, send, count_frames
        self.counters = {"offers": 0, "chunks": 0, "chunk_errors": 0, "chunk_bytes": 0, "frame_bytes": 0,
                         "malformed": 0}
        self.by_node: dict[str, int] = {}  # frame bytes sent per asking node (with count_frames)
        self._tasks: set[asyncio.Task[None]] = set()

    def handle(self, effect: Firmware) -> None:
        """A request from a peer: answered on the running loop once its reads are done."""
        task = asyncio.get_running_loop().create_task(self.answer(effect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def answer(self, effect: Firmware) -> None:
        match effect.msg:
            case OfferRequest() as req:
                reply: Message = await self.source.offer(effect.node_id, req)
            case ChunkRequest() as req:
                why = check_request(req)
                if why:
                    self.counters["malformed"] += 1
                    reply = ChunkData(req.artifact, req.index, b"", why)
                else:
                    reply = await self.source.chunk(req)
            case _:
                return
        frame = len(encode(reply)) if self._count_frames else 0
        if not self._send(effect.peer, reply):
            return
        if isinstance(reply, ChunkData):
            self.counters["chunk_errors" if reply.error else "chunks"] += 1
            self.counters["chunk_bytes"] += len(reply.data)
        else:
            self.counters["offers"] += 1
        if self._count_frames:
            self.counters["frame_bytes"] += frame
            self.by_node[effect.node_id] = self.by_node.get(effect.node_id, 0) + frame

    async def stop(self) -> None:
        """Cancel the answers still being prepared."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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

The chunk bytes being read and sent for one peer are bounded (``MAX_PEER_BYTES``): a request past that is
answered at once with ``ChunkData.error`` "busy" (the asker backs off and asks again), so one peer asking for
thousands of large chunks costs a counter (``busy``), not memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from common.effects import Firmware
from common.protocol import ChunkData, ChunkRequest, FirmwareOffer, Message, OfferRequest, encode
from common.transfer.serve import check_request

__all__ = ["MAX_PEER_BYTES", "OfferSource", "Responder"]

MAX_PEER_BYTES = 16 << 20  # chunk bytes in flight (being read or sent) per peer: a window of 4 of the largest chunks


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
                         "malformed": 0, "busy": 0}
        self.by_node: dict[str, int] = {}  # frame bytes sent per asking node (with count_frames)
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}  # peer -> chunk bytes being read or sent for it

    def handle(self, effect: Firmware) -> None:
        """A request from a peer: answered on the running loop once its reads are done."""
        size = effect.msg.chunk_size if isinstance(effect.msg, ChunkRequest) else 0
        if size > 0:
            held = self._in_flight.get(effect.peer, 0)
            if held + size > MAX_PEER_BYTES:
                self.counters["busy"] += 1
                self._send(effect.peer, ChunkData(effect.msg.artifact, effect.msg.index, b"",
                                                  f"busy: {held} bytes of chunks in flight to you (limit "
                                                  f"{MAX_PEER_BYTES}); ask again"))
                return
            self._in_flight[effect.peer] = held + size
        task = asyncio.get_running_loop().create_task(self.answer(effect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if size > 0:
            task.add_done_callback(lambda _: self._release(effect.peer, size))

    def _release(self, peer: str, size: int) -> None:
        left = self._in_flight.get(peer, 0) - size
        if left > 0:
            self._in_flight[peer] = left
        else:
            self._in_flight.pop(peer, None)

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

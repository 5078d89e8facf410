"""The one firmware responder every hop uses (``common.transfer.responder``): it dispatches, refuses malformed
chunk requests itself, counts only what was sent, and measures frames when asked."""

from __future__ import annotations

import asyncio
import hashlib

from common.effects import Firmware
from common.protocol import ChunkData, ChunkRequest, FirmwareOffer, Heartbeat, Message, OfferRequest, encode
from common.transfer.responder import Responder
from common.transfer.serve import no_offer

ART = hashlib.sha256(b"image").hexdigest()


class Source:
    """An in-memory source that holds one artifact of two chunks and offers release 2.0 only."""

    def __init__(self) -> None:
        self.chunks = {0: b"ab" * 8, 1: b"c" * 5}
        self.asked: list[tuple[str, str]] = []

    async def offer(self, node_id: str, req: OfferRequest) -> FirmwareOffer:
        self.asked.append((node_id, req.version))
        if req.version != "2.0":
            return no_offer(req, f"no release {req.version!r}")
        return FirmwareOffer(req.request_id, req.version, b"{}", "full", ART, "", "", 21, 16, ["h0", "h1"], "")

    async def chunk(self, req: ChunkRequest) -> ChunkData:
        data = self.chunks.get(req.index)
        return ChunkData(req.artifact, req.index, data or b"", "" if data else "past the end")


def run(requests: list[tuple[str, Message]], *, up: bool = True, count_frames: bool = False):
    sent: list[tuple[str, Message]] = []

    def send(peer: str, msg: Message) -> bool:
        sent.append((peer, msg))
        return up

    async def go() -> Responder:
        r = Responder(Source(), send, count_frames=count_frames)
        for peer, msg in requests:
            await r.answer(Firmware(peer, f"node-{peer}", msg))
        return r

    return asyncio.run(go()), sent


def test_offers_and_chunks_are_answered_to_the_asker_and_counted() -> None:
    r, sent = run([("p1", OfferRequest(7, "2.0", "hw", [])), ("p1", OfferRequest(8, "9.9", "hw", [])),
                   ("p2", ChunkRequest(ART, 0, 16)), ("p2", ChunkRequest(ART, 1, 16)), ("p2", ChunkRequest(ART, 5, 16))])
    assert [p for p, _ in sent] == ["p1", "p1", "p2", "p2", "p2"]
    offer, refusal = sent[0][1], sent[1][1]
    assert offer.request_id == 7 and offer.artifact == ART and not offer.error
    assert refusal.request_id == 8 and "9.9" in refusal.error
    assert [m.data for _, m in sent[2:4]] == [b"ab" * 8, b"c" * 5] and sent[4][1].error == "past the end"
    assert r.counters == {"offers": 2, "chunks": 2, "chunk_errors": 1, "chunk_bytes": 21, "frame_bytes": 0,
                          "malformed": 0, "busy": 0}
    assert r.by_node == {}


def test_a_malformed_chunk_request_is_refused_without_asking_the_source() -> None:
    r, sent = run([("p", ChunkRequest("not-a-sha", 0, 16)), ("p", ChunkRequest(ART, -1, 16)),
                   ("p", ChunkRequest(ART, 0, 0))])
    assert all(isinstance(m, ChunkData) and m.error and not m.data for _, m in sent)
    assert r.counters["malformed"] == 3 and r.counters["chunk_errors"] == 3 and r.counters["chunks"] == 0


def test_nothing_is_counted_when_the_peer_is_gone_and_other_messages_are_ignored() -> None:
    r, sent = run([("p", OfferRequest(1, "2.0", "hw", [])), ("p", ChunkRequest(ART, 0, 16)), ("p", Heartbeat(5))],
                  up=False)
    assert len(sent) == 2  # tried; the heartbeat is not a transfer request
    assert r.counters["offers"] == r.counters["chunks"] == r.counters["chunk_bytes"] == 0


def test_frames_are_measured_per_asking_node_when_asked() -> None:
    requests = [("a", OfferRequest(1, "2.0", "hw", [])), ("b", ChunkRequest(ART, 0, 16)), ("a", ChunkRequest(ART, 1, 16))]
    r, sent = run(requests, count_frames=True)
    sizes = [len(encode(m)) for _, m in sent]
    assert r.counters["frame_bytes"] == sum(sizes)
    assert r.by_node == {"node-a": sizes[0] + sizes[2], "node-b": sizes[1]}


def test_handle_answers_on_its_own_task_and_stop_cancels_the_rest() -> None:
    class Slow(Source):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()  # never set: the chunk read never finishes

        async def chunk(self, req: ChunkRequest) -> ChunkData:
            await self.release.wait()
            return await super().chunk(req)

    async def go() -> tuple[list[Message], Responder]:
        sent: list[Message] = []
        offered = asyncio.Event()

        def send(peer: str, msg: Message) -> bool:
            sent.append(msg)
            offered.set()
            return True

        r = Responder(Slow(), send)
        r.handle(Firmware("p", "n", ChunkRequest(ART, 0, 16)))  # waits on the source
        r.handle(Firmware("p", "n", OfferRequest(3, "2.0", "hw", [])))  # is not held up by it
        await offered.wait()
        await r.stop()  # the chunk answer still waiting is cancelled, nothing half-sent
        return sent, r

    sent, r = asyncio.run(go())
    assert [type(m).__name__ for m in sent] == ["FirmwareOffer"] and r.counters["chunks"] == 0


def test_chunk_bytes_in_flight_per_peer_are_bounded() -> None:
    """One peer asking for 10,000 of the largest chunks at once: answered "busy" past MAX_PEER_BYTES, while
    another peer is still served; once answers go out, the peer may ask again (issue 15, point 8)."""
    from common.transfer.responder import MAX_PEER_BYTES
    from common.transfer.serve import MAX_CHUNK

    sent: list[tuple[str, Message]] = []
    gate = asyncio.Event()

    class Slow(Source):
        async def chunk(self, req: ChunkRequest) -> ChunkData:
            await gate.wait()  # the reads are slow: every accepted request stays in flight
            return ChunkData(req.artifact, req.index, b"x", "")

    async def go() -> Responder:
        r = Responder(Slow(), lambda p, m: sent.append((p, m)) or True)
        for i in range(10_000):
            r.handle(Firmware("greedy", "node-g", ChunkRequest(ART, i, MAX_CHUNK)))
        r.handle(Firmware("other", "node-o", ChunkRequest(ART, 0, MAX_CHUNK)))
        await asyncio.sleep(0)
        assert len(r._tasks) == MAX_PEER_BYTES // MAX_CHUNK + 1  # noqa: SLF001 -- the bound under test
        gate.set()
        await asyncio.gather(*list(r._tasks))  # noqa: SLF001
        r.handle(Firmware("greedy", "node-g", ChunkRequest(ART, 0, MAX_CHUNK)))
        await asyncio.gather(*list(r._tasks))  # noqa: SLF001
        return r

    r = asyncio.run(go())
    busy = [m for p, m in sent if p == "greedy" and m.error.startswith("busy")]
    assert len(busy) == 10_000 - MAX_PEER_BYTES // MAX_CHUNK and r.counters["busy"] == len(busy)
    assert [m.error for p, m in sent if p == "other"] == [""]
    assert sent[-1][0] == "greedy" and sent[-1][1].error == ""  # served again once its answers went out

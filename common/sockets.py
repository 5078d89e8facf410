"""Thin asyncio + ZeroMQ socket drivers: a CURVE ROUTER server and a CURVE DEALER upstream link.

Frames are decoded here (``Received`` or ``Malformed`` events) and handed to a
callback; nothing here knows what the messages mean. Sends never block and
never drop silently: the ROUTER sets ``ROUTER_MANDATORY`` so a full or vanished
peer raises instead of discarding, and every refused send is counted by reason
(the protocol above resends what matters: acknowledgements are cumulative and
unacknowledged data is sent again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import zmq
import zmq.asyncio

from common.effects import UPSTREAM, Event, Malformed, Received
from common.errors import ProtocolError
from common.keys import KeyPair, secure_client, secure_server
from common.protocol import Message, decode, encode

__all__ = ["DRAIN_MAX", "ServerSocket", "UpstreamLink"]

log = logging.getLogger(__name__)
DRAIN_MAX = 1000  # frames taken without awaiting once the socket is readable
HANDSHAKE_MS = 3000  # a handshake lost in a black-holed link is abandoned after this, not libzmq's 30 s


def _decode(peer: str, frame: bytes, decoder: Callable[[bytes], Any] = decode) -> Event:
    try:
        return Received(peer, decoder(frame))
    except ProtocolError as exc:
        return Malformed(peer, exc)


class ServerSocket:
    """A CURVE ROUTER bound to ``bind``; peers are named by their routing id in hex.

    Frames are read in bursts: when the socket's descriptor wakes the event
    loop, every frame waiting is taken with NOBLOCK until ``zmq.Again`` (at most
    ``DRAIN_MAX``, then the loop runs its other callbacks before the next
    burst). Reads and sends go straight to the synchronous socket under the
    asyncio one: no future per frame. ZeroMQ's descriptor is edge-triggered and
    any operation may consume its signal, so a send schedules a burst (one per
    loop iteration, however many sends) that reads until ``zmq.Again``.

    ``decoder`` turns a frame into what ``Received`` carries: ``decode`` by
    default; a gateway passes ``decode_forwarding`` (TelemetryBatch as entries).
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        bind: str,
        keys: KeyPair,
        on_event: Callable[[Event], None],
        *,
        decoder: Callable[[bytes], Any] = decode,
        identify: Callable[[str, str], Event] | None = None,
    ) -> None:
        self.ctx, self.bind, self.keys, self.on_event, self.decoder = ctx, bind, keys, on_event, decoder
        # identify(peer, z85_key) -> an event fed before a new peer's first frame: the key its CURVE
        # handshake proved (the ZAP User-Id), so a core can check who a peer says it is against its key
        self.identify = identify
        self._known: dict[bytes, None] = {}
        self.sock: zmq.asyncio.Socket | None = None
        self.endpoint = ""
        self.refused: Counter[str] = Counter()
        self._raw: zmq.Socket | None = None  # the same socket, synchronous
        self._loop: asyncio.AbstractEventLoop | None = None
        self._burst_due = False

    def start(self) -> str:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        secure_server(sock, self.keys)
        sock.bind(self.bind)
        self.sock = sock
        self._raw = zmq.Socket.shadow(sock.underlying)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._raw.FD, self._burst)
        self._schedule_burst()
        return self.endpoint

    def _schedule_burst(self) -> None:
        if not self._burst_due and self._loop is not None:
            self._burst_due = True
            self._loop.call_soon(self._burst)

    def _burst(self) -> None:
        self._burst_due = False
        raw = self._raw
        if raw is None:
            return
        recv = raw.recv_multipart
        identify = self.identify
        for _ in range(DRAIN_MAX):
            try:
                frames = recv(zmq.NOBLOCK) if identify is None else self._identified(recv(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                return
            self._frames(frames)
            if self._raw is None:  # stopped by what the frame caused
                return
        self._schedule_burst()  # more may be waiting: take them after the loop's other callbacks

    def _identified(self, frames: list[zmq.Frame]) -> list[bytes]:
        routing = frames[0].bytes
        if routing not in self._known and len(frames) > 1:
            if len(self._known) >= 100_000:
                self._known.clear()
            self._known[routing] = None
            assert self.identify is not None
            self.on_event(self.identify(routing.hex(), frames[1].get("User-Id") or ""))
        return [f.bytes for f in frames]

    def _frames(self, frames: list[bytes]) -> None:
        peer = frames[0].hex()
        if len(frames) != 2:
            self.on_event(Malformed(peer, ProtocolError(f"expected one message frame, got {len(frames) - 1}")))
            return
        self.on_event(_decode(peer, frames[1], self.decoder))

    def send(self, peer: str, msg: Message) -> bool:
        raw = self._raw
        assert raw is not None
        try:
            raw.send_multipart([bytes.fromhex(peer), encode(msg)], zmq.NOBLOCK)
            return True
        except zmq.Again:
            self.refused["peer-full"] += 1
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.refused["peer-gone"] += 1
        finally:
            self._schedule_burst()  # the send may have taken the descriptor's signal: look for frames soon
        log.debug("send to %s refused", peer, extra={"peer": peer, "kind": type(msg).__name__})
        return False

    async def stop(self) -> None:
        if self._raw is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._raw.FD)
            self._raw = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


class UpstreamLink:
    """A CURVE DEALER connected to one server, recreated on ``reconnect``.

    Given several endpoints (N cloud coordinators sharing one server key), it connects to one at a
    time and each ``reconnect`` moves to the next in turn: the session layer above declares a server
    dead after its silence and waits its backoff, so a dead coordinator is left within
    ``LIVENESS`` heartbeats and a whole list of dead ones is retried with a growing delay.
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        endpoint: str | Sequence[str],
        keys: KeyPair,
        server_public: bytes,
        on_event: Callable[[Event], None],
    ) -> None:
        self.endpoints = (endpoint,) if isinstance(endpoint, str) else tuple(endpoint)
        if not self.endpoints:
            raise ValueError("an upstream link needs at least one endpoint")
        self.index = 0
        self.failovers = 0  # reconnects that moved to another endpoint
        self.ctx, self.keys, self.server_public, self.on_event = ctx, keys, server_public, on_event
        self.sock: zmq.asyncio.Socket | None = None
        self.refused: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint connected to now (or next)."""
        return self.endpoints[self.index]

    def open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        secure_client(sock, self.keys, self.server_public)
        sock.connect(self.endpoint)
        self.sock = sock
        self._task = asyncio.get_running_loop().create_task(self._reader(sock), name=f"dealer:{self.endpoint}")

    async def _reader(self, sock: zmq.asyncio.Socket) -> None:
        recv = sock.recv
        while True:
            frame = await recv()
            for _ in range(DRAIN_MAX):
                self.on_event(_decode(UPSTREAM, frame))
                fut = recv(zmq.NOBLOCK)
                if fut.exception() is not None:
                    break
                frame = fut.result()

    def send(self, msg: Message) -> bool:
        if self.sock is None:
            self.refused["closed"] += 1
            return False
        exc = self.sock.send(encode(msg), zmq.NOBLOCK).exception()
        if exc is None:
            return True
        if not isinstance(exc, zmq.Again):
            raise exc
        self.refused["not-connected"] += 1
        return False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    async def reconnect(self, delay: float) -> None:
        await self.close()
        if len(self.endpoints) > 1:
            self.index = (self.index + 1) % len(self.endpoints)
            self.failovers += 1
            log.info("upstream: trying the next endpoint", extra={"endpoint": self.endpoint, "delay_s": round(delay, 3)})
        await asyncio.sleep(delay)
        self.open()

"""The gateway's enrollment socket: a CURVE ROUTER any key may connect to, which understands only
``EnrollRequest``, and tells the core which key each peer's handshake proved.

It uses its own ZAP domain (``enroll``), admitted by ``gateway.admission.OpenEnrollment``: any
key but a revoked device's. The key comes from the frame's ZAP ``User-Id``
(pyzmq's authenticator sets it to the Z85 key), so a device cannot claim
another's key. Peers are named ``e:<routing id hex>`` so ``SocketRouter`` can
send the answer back on this socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from common.effects import Event
from common.errors import ProtocolError
from common.keys import KeyPair, secure_server
from common.protocol import ErrorReply, Message, decode, encode
from common.protocol.messages import EnrollRequest
from common.security_events import EnrollAttempt
from gateway.security import ENROLL_PREFIX

__all__ = ["ENROLL_DOMAIN", "EnrollSocket", "SocketRouter"]

log = logging.getLogger(__name__)
ENROLL_DOMAIN = "enroll"


class EnrollSocket:
    def __init__(self, ctx: zmq.asyncio.Context, bind: str, keys: KeyPair, on_event: Callable[[Event], None]) -> None:
        self.ctx, self.bind, self.keys, self.on_event = ctx, bind, keys, on_event
        self.sock: zmq.asyncio.Socket | None = None
        self.endpoint = ""
        self.malformed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> str:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.zap_domain = ENROLL_DOMAIN.encode()
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        secure_server(sock, self.keys)
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)  # an enrollment request is small
        sock.bind(self.bind)
        self.sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._task = asyncio.get_running_loop().create_task(self._reader(sock), name="enroll-socket")
        return self.endpoint

    async def _reader(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=False)
            peer = ENROLL_PREFIX + frames[0].bytes.hex()
            if len(frames) != 2:
                self._refuse(peer, "expected one message frame")
                continue
            try:
                msg = decode(frames[1].bytes)
            except ProtocolError as exc:
                self._refuse(peer, str(exc))
                continue
            if not isinstance(msg, EnrollRequest):
                self._refuse(peer, f"{type(msg).__name__}: this socket only takes EnrollRequest")
                continue
            key = frames[1].get("User-Id") or ""
            self.on_event(EnrollAttempt(peer, key, msg))

    def _refuse(self, peer: str, why: str) -> None:
        self.malformed += 1
        self.send(peer, ErrorReply("enroll-only", why[:256]))

    def send(self, peer: str, msg: Message) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.send_multipart([bytes.fromhex(peer.removeprefix(ENROLL_PREFIX)), encode(msg)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False  # the device asks again

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None


class SocketRouter:
    """What ``NodeRunner`` sends through: enrollment peers to the enrollment socket, the rest to the devices'."""

    def __init__(self, devices: Any, enroll: EnrollSocket) -> None:
        self.devices, self.enroll = devices, enroll
        self.refused = devices.refused

    def send(self, peer: str, msg: Message) -> bool:
        if peer.startswith(ENROLL_PREFIX):
            return self.enroll.send(peer, msg)
        return self.devices.send(peer, msg)

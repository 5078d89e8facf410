"""A device's first boot: enroll through the gateway's enrollment socket, then keep the certificate.

The device's CurveZMQ keys are made on first start (``common.keys``); it
connects to the gateway's enrollment endpoint with them (any key may connect
there, and the gateway checks the request names the key the handshake proved)
and sends ``EnrollRequest`` with its claim: a site claim token, or its factory
serial alone (preauthorized by an operator, or waiting as "pending" until one
approves it). On "accept" the certificate is written to ``DATA/cert.pem``
(temp file, fsync, rename) and the agent starts as usual; on "pending" or no
answer it asks again after a growing delay; on "refuse" it stops with an
``EnrollmentError`` naming the reason (a wrong or used-up token will not get better).

``next_step`` is the decision (pure); ``enroll`` is the thin driver around it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import zmq
import zmq.asyncio

from common.backoff import Backoff
from common.errors import EnrollmentError, ProtocolError
from common.fileio import write_atomic
from common.keys import KeyPair, load_or_create_keypair, save_keypair, secure_client
from common.protocol import decode, encode
from common.protocol.messages import EnrollReply, EnrollRequest

__all__ = ["CERT_FILE", "enroll", "install_next", "next_keypair", "next_step", "set_aside_if_expired"]

log = logging.getLogger("edgefleet.agent.enroll")
CERT_FILE = "cert.pem"
ANSWER_TIMEOUT_S = 10.0


def next_step(device_id: str, reply: object | None) -> str:
    """"done", "retry" or raise ``EnrollmentError``, for the answer (None: no answer in time)."""
    match reply:
        case EnrollReply(outcome="accept", certificate=cert) if cert:
            return "done"
        case EnrollReply(outcome="refuse", detail=detail):
            raise EnrollmentError(device_id, detail)
        case _:
            return "retry"


async def enroll(
    ctx: zmq.asyncio.Context, data_dir: Path, keys: KeyPair, *, device_id: str, endpoint: str, gateway_key: bytes,
    hw: str, serial: str, claim_token: str, stop: asyncio.Event,
) -> bytes | None:
    """The device's certificate (PEM): the one on disk, or a new one. None if ``stop`` is set first."""
    path = data_dir / CERT_FILE
    if path.exists():
        return path.read_bytes()
    backoff = Backoff(initial_s=1.0, max_s=30.0, multiplier=2.0, rng=random.Random())
    request = encode(EnrollRequest(device_id, keys.public.decode(), hw, serial, claim_token))
    while not stop.is_set():
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        secure_client(sock, keys, gateway_key)
        sock.connect(endpoint)
        reply: object | None = None
        try:
            await sock.send(request)
            if await sock.poll(ANSWER_TIMEOUT_S * 1000):
                reply = decode(await sock.recv())
        except ProtocolError as exc:
            log.warning("enrollment answer malformed", extra={"error": str(exc)})
        finally:
            sock.close(linger=0)
        if next_step(device_id, reply) == "done":
            assert isinstance(reply, EnrollReply)
            write_atomic(path, reply.certificate, 0o644)
            log.info("enrolled", extra={"device": device_id, "detail": reply.detail})
            return reply.certificate
        delay = backoff.next_delay()
        log.info("enrollment waiting", extra={"device": device_id, "retry_s": round(delay, 1),
                                              "answer": getattr(reply, "detail", "no answer")})
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
    return None


NEXT_SECRET, NEXT_PUBLIC = "curve.next.secret", "curve.next.key"


def set_aside_if_expired(data_dir: Path, now_ms: int) -> bool:
    """The explicit rule for an expired certificate: move it to ``cert.expired.pem`` so the agent enrolls again
    (with its claim token or preauthorized serial) instead of presenting it. True if it did."""
    from common.rotation import certificate_validity

    path = data_dir / CERT_FILE
    if not path.exists() or certificate_validity(path.read_bytes())[1] > now_ms:
        return False
    path.replace(data_dir / "cert.expired.pem")
    log.warning("certificate expired: enrolling again", extra={"path": str(path)})
    return True


def next_keypair(data_dir: Path) -> KeyPair:
    """The key pair to rotate to, made once and kept (0600) until the cloud certified it."""
    return load_or_create_keypair(data_dir, NEXT_SECRET, NEXT_PUBLIC)


def install_next(data_dir: Path, reply: EnrollReply) -> tuple[KeyPair, tuple[int, int]]:
    """Make the certified next key the node's key: certificate first, then the key files, each atomically.

    A crash in between leaves the new certificate with the old key, which the gateway still admits
    (old and new are both accepted until the old certificate expires); the next check rotates again."""
    from common.errors import CertificateError
    from common.rotation import certificate_validity

    nxt = next_keypair(data_dir)
    if reply.curve_key.encode() != nxt.public:
        raise CertificateError(reply.device_id, f"rotation certificate names key {reply.curve_key[:12]}..., "
                                                f"not this device's next key {nxt.public[:12].decode()}...")
    validity = certificate_validity(reply.certificate)
    write_atomic(data_dir / CERT_FILE, reply.certificate, 0o644)
    save_keypair(data_dir, nxt)
    (data_dir / NEXT_SECRET).unlink(missing_ok=True)
    (data_dir / NEXT_PUBLIC).unlink(missing_ok=True)
    return nxt, validity

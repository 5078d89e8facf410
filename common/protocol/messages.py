"""Every EdgeFleet wire message, defined once as a typed, versioned record.

A message travels as one ZeroMQ frame holding a msgpack array
``[kind, version, field, field, ...]`` in the field order below. Only
``common.protocol.codec`` touches msgpack; this module only declares shapes.

Field annotations are the schema: the codec validates each decoded value
against them (see ``codec.CHECKS``), so adding a field here is the whole change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "Command",
    "ChunkData",
    "ChunkRequest",
    "CommandAck",
    "EnrollReply",
    "EnrollRequest",
    "ErrorReply",
    "FirmwareOffer",
    "OfferRequest",
    "ForwardAck",
    "ForwardBatch",
    "ForwardRecord",
    "GatewayStatus",
    "Heartbeat",
    "Hello",
    "HelloAck",
    "KeyRotation",
    "MESSAGE_TYPES",
    "DdiCredentials",
    "SitePlanEnvelope",
    "Message",
    "NodeCertificate",
    "ROLES",
    "RevocationUpdate",
    "STREAMS",
    "TelemetryAck",
    "TelemetryBatch",
    "TelemetryRecord",
]

ROLES = ("device", "gateway")


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every message; ``KIND`` is its number on the wire."""

    KIND: ClassVar[int] = 0


# -- nested records (not messages on their own) ------------------------------------------

STREAMS = ("critical", "state", "bulk")
"""A device's sequence spaces, highest priority first. Each stream has its own
sequence (assigned at the origin, never reused), its own byte quota and TTL:
``critical`` (alerts, update results, security events, gap reports) is never
evicted, only refused when its own quota is full; ``state`` (status, inventory)
and ``bulk`` (metric samples) evict their oldest records when full."""


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    """One record as its origin made it; ``kind`` says what it is ("metrics", "gap", ...)."""

    seq: int
    ts_ms: int
    kind: str
    values: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """A record as the gateway keeps it in its outbox and forwards it: identity (device_id, stream, seq)."""

    device_id: str
    stream: str
    seq: int
    ts_ms: int
    kind: str
    values: dict[str, float | str] = field(default_factory=dict)


# -- session -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message on a link: who is speaking and which protocol versions it speaks."""

    KIND: ClassVar[int] = 1
    node_id: str
    role: str
    site: str
    min_version: int
    max_version: int


@dataclass(frozen=True, slots=True)
class HelloAck(Message):
    """The server's answer to Hello: the version both speak, the heartbeat interval and the
    initial receive window (records the client may have unacknowledged per stream)."""

    KIND: ClassVar[int] = 2
    node_id: str
    version: int
    heartbeat_ms: int
    window: int


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Liveness, both ways; any message counts as liveness, this one is sent when idle."""

    KIND: ClassVar[int] = 3
    sent_ms: int


@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """Sent back for a message that could not be used; the link stays up."""

    KIND: ClassVar[int] = 4
    code: str
    detail: str


# -- telemetry ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelemetryBatch(Message):
    """Device to gateway: records of one stream in sequence order.

    ``base`` is the device's acknowledged watermark for the stream when it sent
    the batch: everything up to it was already acknowledged by a gateway.
    """

    KIND: ClassVar[int] = 10
    device_id: str
    stream: str
    base: int
    records: list[TelemetryRecord]


@dataclass(frozen=True, slots=True)
class TelemetryAck(Message):
    """Gateway to device: every record of ``stream`` up to ``up_to`` is durable at the gateway,
    and the device may have ``credit`` more records in flight (0: keep them in your buffer)."""

    KIND: ClassVar[int] = 11
    device_id: str
    stream: str
    up_to: int
    credit: int


@dataclass(frozen=True, slots=True)
class ForwardBatch(Message):
    """Gateway to cloud: outbox entries ``first..last`` of one stream.

    ``blob`` holds the entries (each an encoded ForwardRecord), packed and
    compressed by the codec. ``base`` is the gateway's acknowledged watermark
    for the stream: everything up to it is already committed in the cloud.
    """

    KIND: ClassVar[int] = 20
    gateway_id: str
    site: str
    stream: str
    base: int
    first: int
    last: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class ForwardAck(Message):
    """Cloud to gateway: outbox entries of ``stream`` up to ``up_to`` are committed to the cloud store."""

    KIND: ClassVar[int] = 21
    stream: str
    up_to: int
    stored: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class GatewayStatus(Message):
    """Gateway to cloud, every few seconds while the uplink is up: backlog per stream, oldest
    record age, disk use against quota, drop counters, link state (``values``, flat keys)."""

    KIND: ClassVar[int] = 22
    gateway_id: str
    ts_ms: int
    values: dict[str, float | str]


# -- commands (downlink) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command(Message):
    """Cloud to gateway, and gateway to device: run ``name`` with ``args``.

    ``seq`` is the command's number in the device's command sequence (the device
    runs each number once); the gateway holds it until the device acknowledges
    it or ``expires_ms`` (wall clock) passes.
    """

    KIND: ClassVar[int] = 30
    device_id: str
    seq: int
    name: str
    args: dict[str, str]
    expires_ms: int
    envelope: bytes = b""  # the cloud's signed "command" envelope (common.signed); empty: unsigned


@dataclass(frozen=True, slots=True)
class CommandAck(Message):
    """Device to gateway: ``status`` "done" or "failed" (with ``detail``) for command ``seq``.
    Gateway to cloud: ``status`` "held": the gateway has it durably."""

    KIND: ClassVar[int] = 31
    device_id: str
    seq: int
    status: str
    detail: str


# -- firmware transfer (cloud -> gateway -> device) ------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferRequest(Message):
    """Device to gateway, gateway to cloud: "how do I get release ``version`` for ``hw``?".

    ``bases`` are the versions whose full images the asker already holds (a device: the one it
    runs; a gateway: every full image in its site cache); the answer may be a delta from one."""

    KIND: ClassVar[int] = 40
    request_id: int
    version: str
    hw: str
    bases: list[str]


@dataclass(frozen=True, slots=True)
class FirmwareOffer(Message):
    """The answer to ``OfferRequest``: the signed manifest and the one artifact to fetch.

    ``kind`` is "full" (the image; its chunk hashes are the signed manifest's) or "delta" (from
    ``from_version``, made by ``method``; ``chunks`` lists its chunk hashes, so a bad chunk is caught
    as it arrives; what proves it is the manifest's SHA-256 of the image it rebuilds).
    ``error`` is non-empty when there is nothing to offer, and says why."""

    KIND: ClassVar[int] = 41
    request_id: int
    version: str
    manifest: bytes
    kind: str
    artifact: str
    from_version: str
    method: str
    size: int
    chunk_size: int
    chunks: list[str]
    error: str


@dataclass(frozen=True, slots=True)
class ChunkRequest(Message):
    """Ask for chunk ``index`` (``chunk_size`` bytes from ``index * chunk_size``) of artifact
    ``artifact`` (its SHA-256). Each request is one unit of credit: the asker keeps a bounded
    number in flight (the ZeroMQ guide's credit-based file transfer)."""

    KIND: ClassVar[int] = 42
    artifact: str
    index: int
    chunk_size: int


@dataclass(frozen=True, slots=True)
class ChunkData(Message):
    """One chunk; empty ``data`` with ``error`` set when the server cannot give it (yet)."""

    KIND: ClassVar[int] = 43
    artifact: str
    index: int
    data: bytes
    error: str
# -- identity and security (kinds 60-69) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrollRequest(Message):
    """Device to gateway (on its enrollment socket), gateway to cloud: enroll ``device_id``.

    ``curve_key`` is the Z85 CurveZMQ public key the device connected with (the
    gateway checks it against the handshake's key); ``claim_token`` is a site claim
    token, or "" to claim by the factory ``serial``."""

    KIND: ClassVar[int] = 60
    device_id: str
    curve_key: str
    hw: str
    serial: str
    claim_token: str


@dataclass(frozen=True, slots=True)
class EnrollReply(Message):
    """Cloud to gateway, gateway to device: ``outcome`` "accept" (with the PEM ``certificate``),
    "pending" (wait for an operator's approval, ask again later), "retry" (the gateway's enrollment
    rate limit: ask again later) or "refuse" (``detail`` says why)."""

    KIND: ClassVar[int] = 61
    device_id: str
    curve_key: str
    outcome: str
    detail: str
    certificate: bytes


@dataclass(frozen=True, slots=True)
class RevocationUpdate(Message):
    """Cloud to gateway: the current signed revocation list (``common.revocation``), on every session
    start and whenever it changes."""

    KIND: ClassVar[int] = 62
    envelope: bytes


@dataclass(frozen=True, slots=True)
class DdiCredentials(Message):
    """Cloud to gateway: the DDI devices of the gateway's site and their TargetTokens as SHA-256 hashes
    (hex; the tokens themselves are shown once, to the operator who issued them), with each device's
    hardware model; on every session start and whenever one is issued or revoked. ``version`` only grows:
    a gateway keeps the newest it holds (``gateway.ddi.tokens``)."""

    KIND: ClassVar[int] = 70
    site: str
    version: int
    devices: list[str]
    token_hashes: list[str]
    hw: list[str]


@dataclass(frozen=True, slots=True)
class KeyRotation(Message):
    """Device to gateway on its authenticated session, gateway to cloud: certify ``new_curve_key`` for
    ``device_id`` (the old key stays admitted until its certificate expires). Answered by ``EnrollReply``."""

    KIND: ClassVar[int] = 63
    device_id: str
    new_curve_key: str


@dataclass(frozen=True, slots=True)
class NodeCertificate(Message):
    """Gateway to cloud, after HelloAck: the gateway's certificate (PEM), binding its id and site to the
    CurveZMQ key it connected with. Answered by ``ErrorReply("certificate")`` if it does not verify."""

    KIND: ClassVar[int] = 64
    certificate: bytes
# -- rollouts (50-59) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SitePlanEnvelope(Message):
    """Cloud to gateway: the site's part of rollout ``rollout_id``, an Ed25519-signed envelope
    (``common.signed``, kind ``rollout-site-plan``) the gateway verifies before acting on it
    (``common.rollouts.siteplan``). A newer one (higher envelope seq) supersedes it."""

    KIND: ClassVar[int] = 50
    rollout_id: str
    blob: bytes


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.KIND: cls
    for cls in (
        Hello,
        HelloAck,
        Heartbeat,
        ErrorReply,
        TelemetryBatch,
        TelemetryAck,
        ForwardBatch,
        ForwardAck,
        GatewayStatus,
        Command,
        CommandAck,
        OfferRequest,
        FirmwareOffer,
        ChunkRequest,
        ChunkData,
        EnrollRequest,
        EnrollReply,
        RevocationUpdate,
        KeyRotation,
        NodeCertificate,
        SitePlanEnvelope,
        DdiCredentials,
    )
}

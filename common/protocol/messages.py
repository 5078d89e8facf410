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
    "CommandAck",
    "ErrorReply",
    "ForwardAck",
    "ForwardBatch",
    "ForwardRecord",
    "GatewayStatus",
    "Heartbeat",
    "Hello",
    "HelloAck",
    "MESSAGE_TYPES",
    "SitePlanEnvelope",
    "Message",
    "ROLES",
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


@dataclass(frozen=True, slots=True)
class CommandAck(Message):
    """Device to gateway: ``status`` "done" or "failed" (with ``detail``) for command ``seq``.
    Gateway to cloud: ``status`` "held": the gateway has it durably."""

    KIND: ClassVar[int] = 31
    device_id: str
    seq: int
    status: str
    detail: str


# -- rollouts (50-59) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SitePlanEnvelope(Message):
    """Cloud to gateway: the site's part of rollout ``rollout_id``, an Ed25519-signed envelope
    (``common.signed``, kind ``rollout-site-plan``) the gateway verifies before acting on it
    (``cloud.rollouts.siteplan``). A newer one (higher envelope seq) supersedes it."""

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
        SitePlanEnvelope,
    )
}

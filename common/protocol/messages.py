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
    "ErrorReply",
    "ForwardAck",
    "ForwardBatch",
    "ForwardRecord",
    "Heartbeat",
    "Hello",
    "HelloAck",
    "MESSAGE_TYPES",
    "Message",
    "ROLES",
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


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    """One sample as the device made it: its sequence is assigned at the origin."""

    seq: int
    ts_ms: int
    stream: str
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """A telemetry record as the gateway keeps it in its outbox and forwards it."""

    device_id: str
    seq: int
    ts_ms: int
    stream: str
    values: dict[str, float] = field(default_factory=dict)


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
    """The server's answer to Hello: the version both will speak and the heartbeat interval."""

    KIND: ClassVar[int] = 2
    node_id: str
    version: int
    heartbeat_ms: int


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
    """Device to gateway: records in sequence order.

    ``base`` is the device's acknowledged watermark when it sent the batch:
    everything up to it was already acknowledged by a gateway.
    """

    KIND: ClassVar[int] = 10
    device_id: str
    base: int
    records: list[TelemetryRecord]


@dataclass(frozen=True, slots=True)
class TelemetryAck(Message):
    """Gateway to device: every record up to ``up_to`` is durable at the gateway."""

    KIND: ClassVar[int] = 11
    device_id: str
    up_to: int


@dataclass(frozen=True, slots=True)
class ForwardBatch(Message):
    """Gateway to cloud: outbox entries ``first..last``, each an encoded ForwardRecord.

    ``base`` is the gateway's acknowledged watermark when it sent the batch:
    everything up to it is already committed in the cloud.
    """

    KIND: ClassVar[int] = 20
    gateway_id: str
    site: str
    base: int
    first: int
    last: int
    entries: list[bytes]


@dataclass(frozen=True, slots=True)
class ForwardAck(Message):
    """Cloud to gateway: outbox entries up to ``up_to`` are committed to the cloud store."""

    KIND: ClassVar[int] = 21
    up_to: int
    stored: int
    duplicates: int


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.KIND: cls
    for cls in (Hello, HelloAck, Heartbeat, ErrorReply, TelemetryBatch, TelemetryAck, ForwardBatch, ForwardAck)
}

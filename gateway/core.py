"""The gateway's sans-IO core: accept device telemetry into the durable outbox, forward it to the cloud.

Downstream, each device session starts with HELLO. A telemetry batch is
acknowledged only after its records are committed to the outbox (``Persisted``),
so an acknowledgement always means "durable here". Upstream, the outbox is
streamed to the cloud and entries are dropped only when the cloud acknowledges
that they are committed to its store.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from common.backoff import Backoff
from common.effects import (
    UPSTREAM,
    Append,
    Effect,
    Event,
    LinkUp,
    Log,
    Malformed,
    Persisted,
    PersistFailed,
    QueueReader,
    Received,
    Send,
    SetTimer,
    Start,
    TimerFired,
)
from common.errors import VersionMismatch
from common.protocol import (
    SUPPORTED_VERSIONS,
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    TelemetryAck,
    TelemetryBatch,
    encode_record,
    negotiate,
)
from common.uplink import LIVENESS, QueueSender, Uplink

__all__ = ["GatewayCore", "OUTBOX"]

OUTBOX = "outbox"


@dataclass(slots=True)
class DeviceSession:
    device_id: str
    last_rx: float


class GatewayCore:
    """Feed it events with ``handle(event, now)``; run the effects it returns."""

    def __init__(
        self,
        gateway_id: str,
        site: str,
        outbox: QueueReader,
        *,
        rng: random.Random,
        heartbeat_s: float = 1.0,
        ack_timeout_s: float = 5.0,
        batch_max: int = 1000,
        window: int = 8000,
    ) -> None:
        self.gateway_id = gateway_id
        self.site = site
        self.heartbeat_s = heartbeat_s
        self.sessions: dict[str, DeviceSession] = {}
        self.accepted: dict[str, int] = {}  # device -> highest sequence durable in the outbox
        self.pending: dict[str, int] = {}  # device -> highest sequence being appended
        self.counters = {"records_in": 0, "batches_in": 0, "resent_records": 0, "out_of_order": 0, "malformed": 0, "refused": 0}
        self.uplink = Uplink(
            Hello(gateway_id, "gateway", site, *SUPPORTED_VERSIONS),
            heartbeat_s=heartbeat_s,
            backoff=Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, rng=rng),
        )
        self.sender = QueueSender(
            OUTBOX,
            outbox,
            lambda items: ForwardBatch(gateway_id, site, self.sender.acked, items[0][0], items[-1][0], [p for _, p in items]),
            batch_max=batch_max,
            window=window,
            ack_timeout_s=ack_timeout_s,
        )

    def handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Start():
                return [*self.uplink.open(now), SetTimer("heartbeat", now + self.heartbeat_s)]
            case LinkUp():
                return self.uplink.open(now)
            case Received(peer, msg) if peer == UPSTREAM:
                return self._from_cloud(msg, now)
            case Received(peer, msg):
                return self._from_device(peer, msg, now)
            case Malformed(peer, error):
                self.counters["malformed"] += 1
                if peer == UPSTREAM:
                    return [Log("warning", "malformed frame from cloud", {"error": str(error)})]
                return [Send(peer, ErrorReply("malformed", str(error)))]
            case Persisted(("device", peer, device_id, first, last), _):
                acked = self.accepted.get(device_id, 0)
                if first <= acked + 1:  # not after an append that failed
                    acked = self.accepted[device_id] = max(acked, last)
                out: list[Effect] = [Send(peer, TelemetryAck(device_id, acked))] if acked else []
                return out + (self.sender.pump(now) if self.uplink.up else [])
            case PersistFailed(("device", peer, device_id, _, _), error):
                self.pending[device_id] = self.accepted.get(device_id, 0)
                self.counters["refused"] += 1
                return [Send(peer, ErrorReply("backpressure", str(error)))]
            case TimerFired("heartbeat"):
                return [*self._tick(now), SetTimer("heartbeat", now + self.heartbeat_s)]
        return []

    # -- downstream ------------------------------------------------------------------

    def _from_device(self, peer: str, msg: Message, now: float) -> list[Effect]:
        session = self.sessions.get(peer)
        if session is not None:
            session.last_rx = now
        match msg:
            case Hello(node_id, "device", _, low, high):
                try:
                    version = negotiate(low, high)
                except VersionMismatch as exc:
                    return [Send(peer, ErrorReply("version", str(exc)))]
                self.sessions[peer] = DeviceSession(node_id, now)
                return [Send(peer, HelloAck(self.gateway_id, version, int(self.heartbeat_s * 1000)))]
            case Hello(node_id=node_id, role=role):
                return [Send(peer, ErrorReply("role", f"{node_id!r} said role {role!r}; this gateway serves devices"))]
            case _ if session is None:
                return [Send(peer, ErrorReply("hello-first", f"send Hello before {type(msg).__name__}"))]
            case TelemetryBatch(device_id, base, records):
                if device_id != session.device_id:
                    return [Send(peer, ErrorReply("wrong-device", f"session is {session.device_id!r}, batch says {device_id!r}"))]
                return self._accept(peer, device_id, base, records)
            case Heartbeat():
                return [Send(peer, Heartbeat(int(now * 1000)))]
        return [Send(peer, ErrorReply("unexpected", f"{type(msg).__name__} is not handled by a gateway"))]

    def _accept(self, peer: str, device_id: str, base: int, records: list) -> list[Effect]:
        """Append the records that extend this device's contiguous run; acknowledge only that run.

        Records after a gap (a lost or reordered batch) are not taken: the device
        sends them again after the missing ones, so a cumulative acknowledgement
        never covers a record this gateway does not hold.
        """
        self.counters["batches_in"] += 1
        if base > self.accepted.get(device_id, 0):
            self.accepted[device_id] = base  # acknowledged before (by this gateway before a restart, or another)
        expect = max(self.accepted.get(device_id, 0), self.pending.get(device_id, 0)) + 1
        fresh = []
        for r in sorted(records, key=lambda r: r.seq):
            if r.seq < expect:
                self.counters["resent_records"] += 1
            elif r.seq == expect:
                fresh.append(r)
                expect += 1
            else:
                self.counters["out_of_order"] += 1
                break
        if not fresh:
            acked = self.accepted.get(device_id, 0)
            return [Send(peer, TelemetryAck(device_id, acked))] if acked else []
        self.counters["records_in"] += len(fresh)
        self.pending[device_id] = fresh[-1].seq
        payloads = [encode_record(ForwardRecord(device_id, r.seq, r.ts_ms, r.stream, r.values)) for r in fresh]
        return [Append(OUTBOX, payloads, ("device", peer, device_id, fresh[0].seq, fresh[-1].seq))]

    # -- upstream --------------------------------------------------------------------

    def _from_cloud(self, msg: Message, now: float) -> list[Effect]:
        if self.uplink.received(msg, now):
            self.sender.rewind()
            return [Log("info", "cloud session up", {"version": self.uplink.version}), *self.sender.pump(now)]
        match msg:
            case ForwardAck(up_to, _, _):
                return self.sender.acknowledged(up_to, now)
            case ErrorReply("hello-first", _):
                return self.uplink.open(now)
            case ErrorReply(code, detail):
                return [Log("warning", "cloud refused a message", {"code": code, "detail": detail})]
        return []

    def _tick(self, now: float) -> list[Effect]:
        out = self.uplink.tick(now)
        if self.uplink.up:
            out += self.sender.tick(now)
        dead = [p for p, s in self.sessions.items() if now - s.last_rx > LIVENESS * self.heartbeat_s]
        for peer in dead:
            out.append(Log("info", "device silent: session closed", {"device": self.sessions.pop(peer).device_id}))
        return out

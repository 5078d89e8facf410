"""The cloud's sans-IO core: gateway sessions, and committing forwarded telemetry exactly once.

A ForwardBatch becomes a ``StoreIngest`` effect; only when the store answers
``Stored`` (committed) is the batch acknowledged. Acknowledgements are
cumulative over the gateway's outbox sequence, so the core only advances a
gateway's watermark over contiguous batches: a batch that arrives after a lost
one is stored (the store deduplicates on (device, sequence)) but not
acknowledged until the gap before it is filled.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.effects import (
    Effect,
    Event,
    Log,
    Malformed,
    Received,
    Send,
    SetTimer,
    Start,
    Stored,
    StoreIngest,
    StoreTouch,
    TimerFired,
)
from common.errors import ProtocolError, VersionMismatch
from common.protocol import (
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    decode_record,
    negotiate,
)
from common.uplink import LIVENESS

__all__ = ["CloudCore"]


@dataclass(slots=True)
class GatewaySession:
    gateway_id: str
    site: str
    last_rx: float
    contiguous: int | None = None  # outbox sequence up to which every entry is stored


class CloudCore:
    """Feed it events with ``handle(event, now)``; run the effects it returns."""

    def __init__(self, cloud_id: str = "cloud", *, heartbeat_s: float = 1.0) -> None:
        self.cloud_id = cloud_id
        self.heartbeat_s = heartbeat_s
        self.sessions: dict[str, GatewaySession] = {}
        self.counters = {"batches": 0, "records": 0, "stored": 0, "duplicates": 0, "rejected": 0, "malformed": 0}

    def handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Start():
                return [SetTimer("heartbeat", now + self.heartbeat_s)]
            case Received(peer, msg):
                return self._received(peer, msg, now)
            case Malformed(peer, error):
                self.counters["malformed"] += 1
                return [Send(peer, ErrorReply("malformed", str(error)))]
            case Stored((peer, first, last), stored, duplicates):
                return self._stored(peer, first, last, stored, duplicates)
            case TimerFired("heartbeat"):
                out: list[Effect] = [SetTimer("heartbeat", now + self.heartbeat_s)]
                for peer in [p for p, s in self.sessions.items() if now - s.last_rx > LIVENESS * self.heartbeat_s]:
                    s = self.sessions.pop(peer)
                    out.append(Log("warning", "gateway silent: session closed", {"gateway": s.gateway_id, "site": s.site}))
                return out
        return []

    def _received(self, peer: str, msg: Message, now: float) -> list[Effect]:
        session = self.sessions.get(peer)
        if session is not None:
            session.last_rx = now
        match msg:
            case Hello(node_id, "gateway", site, low, high):
                try:
                    version = negotiate(low, high)
                except VersionMismatch as exc:
                    return [Send(peer, ErrorReply("version", str(exc)))]
                self.sessions[peer] = GatewaySession(node_id, site, now)
                return [
                    StoreTouch(node_id, site),
                    Send(peer, HelloAck(self.cloud_id, version, int(self.heartbeat_s * 1000))),
                    Log("info", "gateway session up", {"gateway": node_id, "site": site}),
                ]
            case Hello(node_id=node_id, role=role):
                return [Send(peer, ErrorReply("role", f"{node_id!r} said role {role!r}; the cloud serves gateways"))]
            case _ if session is None:
                return [Send(peer, ErrorReply("hello-first", f"send Hello before {type(msg).__name__}"))]
            case ForwardBatch(gateway_id, _, base, first, last, entries):
                if gateway_id != session.gateway_id or not base < first <= last:
                    return [Send(peer, ErrorReply("bad-batch", f"batch {first}..{last} from {gateway_id!r} on session {session.gateway_id!r}"))]
                session.contiguous = max(session.contiguous or 0, base)
                return self._ingest(peer, session, first, last, entries)
            case Heartbeat():
                return [StoreTouch(session.gateway_id, session.site), Send(peer, Heartbeat(int(now * 1000)))]
        return [Send(peer, ErrorReply("unexpected", f"{type(msg).__name__} is not handled by the cloud"))]

    def _ingest(self, peer: str, session: GatewaySession, first: int, last: int, entries: list[bytes]) -> list[Effect]:
        records, out = [], []
        for i, raw in enumerate(entries):
            try:
                records.append(decode_record(raw))
            except ProtocolError as exc:
                # a corrupt outbox entry can never be stored; count it and say so instead of looping on it
                self.counters["rejected"] += 1
                out.append(Log("error", "rejected outbox entry", {"gateway": session.gateway_id, "entry": first + i, "error": str(exc)}))
        self.counters["batches"] += 1
        self.counters["records"] += len(records)
        return [*out, StoreIngest((peer, first, last), session.gateway_id, session.site, records)]

    def _stored(self, peer: str, first: int, last: int, stored: int, duplicates: int) -> list[Effect]:
        self.counters["stored"] += stored
        self.counters["duplicates"] += duplicates
        session = self.sessions.get(peer)
        if session is None or session.contiguous is None:
            return []  # the session ended meanwhile; the gateway will resend and the store deduplicates
        if first <= session.contiguous + 1:
            session.contiguous = max(session.contiguous, last)
        return [Send(peer, ForwardAck(session.contiguous, stored, duplicates))]

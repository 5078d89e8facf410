"""The gateway's downstream side, sans-IO: device sessions, telemetry accepted into the outbox, and credit.

Each device session starts with HELLO. A telemetry batch is appended to the
outbox only for the records that extend the device's contiguous run, and it is
acknowledged only after they are committed (``persisted``), so an
acknowledgement always means "durable here". The acknowledgement grants the
device a credit: how many more records of that stream it may send (0 while the
critical stream's outbox quota is nearly full: the device keeps them in its own
buffer, and hears at its next heartbeat when it may send again).

    sessions = DeviceSessions("gw-1", outbox, heartbeat_s=1.0, device_window=2000)
    effects, opened = sessions.hello(peer, hello, now)           # HelloAck, or an ErrorReply
    device = sessions.touch(peer, now)                           # any frame: its session's device, or None
    effects, taken = sessions.accept(peer, entries)              # Append (token ("device", ...)) or an ack
    effects = sessions.persisted(peer, device, stream, first, last)   # the TelemetryAck with credit
    effects = sessions.close_silent(now)                         # sessions silent for 3 heartbeats end
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from common.effects import Append, Effect, Log, QueueReader, Send
from common.protocol import STREAMS, ErrorReply, Heartbeat, Hello, HelloAck, TelemetryAck
from common.protocol.codec import TelemetryEntries
from common.uplink import agreed_version, silent_peers
from gateway.reports import OUTBOX

__all__ = ["DeviceSession", "DeviceSessions"]

CREDIT_FLOOR = 0.95  # the critical stream's share of its quota above which a device gets no credit


@dataclass(slots=True)
class DeviceSession:
    device_id: str
    last_rx: float


class DeviceSessions:
    """Sessions by peer, the highest sequence durable per (device, stream), and the credit devices get."""

    def __init__(self, gateway_id: str, outbox: QueueReader, *, heartbeat_s: float, device_window: int) -> None:
        self.gateway_id = gateway_id
        self.outbox = outbox  # read for its quota (credit); appends are effects
        self.heartbeat_s = heartbeat_s
        self.device_window = device_window
        self._sessions: dict[str, DeviceSession] = {}
        self._peers: dict[str, str] = {}  # device -> its current peer
        self._accepted: dict[tuple[str, str], int] = {}  # (device, stream) -> highest sequence durable here
        self._pending: dict[tuple[str, str], int] = {}  # (device, stream) -> highest sequence being appended
        self._throttled: set[tuple[str, str]] = set()  # (device, stream) told credit 0
        self.counters = {"records_in": 0, "batches_in": 0, "resent_records": 0, "out_of_order": 0, "refused": 0,
                         "throttled": 0}

    # -- reading -------------------------------------------------------------------------

    @property
    def sessions(self) -> MappingProxyType[str, DeviceSession]:
        """peer -> session, read-only."""
        return MappingProxyType(self._sessions)

    @property
    def accepted(self) -> MappingProxyType[tuple[str, str], int]:
        """(device, stream) -> the highest sequence durable here, read-only."""
        return MappingProxyType(self._accepted)

    def __len__(self) -> int:
        return len(self._sessions)

    def device_of(self, peer: str) -> str | None:
        session = self._sessions.get(peer)
        return None if session is None else session.device_id

    def peer_of(self, device_id: str) -> str | None:
        """The peer ``device_id`` is connected on now, or None."""
        peer = self._peers.get(device_id)
        return peer if peer is not None and peer in self._sessions else None

    def open_sessions(self) -> list[tuple[str, str]]:
        """(peer, device) of every session, oldest first."""
        return [(peer, s.device_id) for peer, s in self._sessions.items()]

    # -- sessions ------------------------------------------------------------------------

    def touch(self, peer: str, now: float) -> str | None:
        """A frame came from ``peer``: its session (if any) is alive; the device it speaks for."""
        session = self._sessions.get(peer)
        if session is None:
            return None
        session.last_rx = now
        return session.device_id

    def hello(self, peer: str, msg: Hello, now: float) -> tuple[list[Effect], bool]:
        """A device's HELLO: the answer, and whether a session opened."""
        if msg.role != "device":
            return [Send(peer, ErrorReply("role", f"{msg.node_id!r} said role {msg.role!r}; this gateway serves devices"))], False
        version = agreed_version(peer, msg.min_version, msg.max_version)
        if isinstance(version, Send):
            return [version], False
        self._sessions[peer] = DeviceSession(msg.node_id, now)
        self._peers[msg.node_id] = peer
        return [Send(peer, HelloAck(self.gateway_id, version, int(self.heartbeat_s * 1000), self.device_window))], True

    def close(self, peer: str) -> str | None:
        """End ``peer``'s session (revoked, silent); the device it spoke for."""
        session = self._sessions.pop(peer, None)
        if session is None:
            return None
        if self._peers.get(session.device_id) == peer:
            del self._peers[session.device_id]
        return session.device_id

    def close_silent(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        for peer in silent_peers(self._sessions, now, self.heartbeat_s):
            out.append(Log("info", "device silent: session closed", {"device": self.close(peer)}))
        return out

    def heartbeat(self, peer: str, device_id: str, now: float) -> list[Effect]:
        """The answer to a device's heartbeat; a device told to hold back hears when it may send again."""
        out: list[Effect] = [Send(peer, Heartbeat(int(now * 1000)))]
        for key in [k for k in self._throttled if k[0] == device_id]:
            credit = self._credit(key)
            if credit:
                self._throttled.discard(key)
                out.append(Send(peer, TelemetryAck(key[0], key[1], self._accepted.get(key, 0), credit)))
        return out

    # -- telemetry -----------------------------------------------------------------------

    def refusal(self, peer: str, device_id: str, batch: TelemetryEntries) -> list[Effect]:
        """Why the session of ``device_id`` may not send this batch (empty: it may)."""
        if batch.device_id != device_id:
            return [Send(peer, ErrorReply("wrong-device", f"session is {device_id!r}, batch says {batch.device_id!r}"))]
        if batch.stream not in STREAMS:
            return [Send(peer, ErrorReply("bad-stream", f"unknown stream {batch.stream!r}; streams are {', '.join(STREAMS)}"))]
        return []

    def accept(self, peer: str, batch: TelemetryEntries) -> tuple[list[Effect], list[list[Any]]]:
        """Append the records that extend this device's contiguous run; acknowledge only that run.

        Records after a gap (a lost or reordered batch) are not taken: the device
        sends them again after the missing ones, so a cumulative acknowledgement
        never covers a record this gateway does not hold. Returns the effects and the
        records taken (as the codec checked them, for observers).
        """
        device_id, stream, seqs = batch.device_id, batch.stream, batch.seqs
        key = (device_id, stream)
        self.counters["batches_in"] += 1
        if batch.base > self._accepted.get(key, 0):
            self._accepted[key] = batch.base  # acknowledged before (by this gateway before a restart, or another)
        expect = max(self._accepted.get(key, 0), self._pending.get(key, 0)) + 1
        if seqs == list(range(expect, expect + len(seqs))):
            payloads, records = batch.entries, batch.records  # the usual batch: exactly the next records, in order
            first, last = expect, expect + len(seqs) - 1
        else:
            taken = []
            for i in sorted(range(len(seqs)), key=seqs.__getitem__):
                if seqs[i] < expect:
                    self.counters["resent_records"] += 1
                elif seqs[i] == expect:
                    taken.append(i)
                    expect += 1
                else:
                    self.counters["out_of_order"] += 1
                    break
            payloads, records = [batch.entries[i] for i in taken], [batch.records[i] for i in taken]
            first, last = expect - len(taken), expect - 1
        if not payloads:
            acked = self._accepted.get(key, 0)
            return ([Send(peer, TelemetryAck(device_id, stream, acked, self._credit(key)))] if acked else []), []
        self.counters["records_in"] += len(payloads)
        self._pending[key] = last
        return [Append(OUTBOX, stream, payloads, ("device", peer, device_id, stream, first, last))], records

    def persisted(self, peer: str, device_id: str, stream: str, first: int, last: int) -> list[Effect]:
        """Records ``first..last`` are durable in the outbox: the acknowledgement, with credit."""
        key = (device_id, stream)
        acked = self._accepted.get(key, 0)
        if first <= acked + 1:  # not after an append that failed
            acked = self._accepted[key] = max(acked, last)
        return [Send(peer, TelemetryAck(device_id, stream, acked, self._credit(key)))] if acked else []

    def persist_failed(self, peer: str, device_id: str, stream: str, error: Exception) -> list[Effect]:
        """The outbox refused the append: the device keeps the records and is told to hold back."""
        key = (device_id, stream)
        self._pending[key] = self._accepted.get(key, 0)
        self.counters["refused"] += 1
        self._throttled.add(key)
        return [
            Send(peer, TelemetryAck(device_id, stream, self._accepted.get(key, 0), 0)),
            Log("warning", "outbox refused records", {"device": device_id, "stream": stream, "error": str(error)}),
        ]

    def _credit(self, key: tuple[str, str]) -> int:
        """Records the device may send beyond its acknowledgement: none while a refusing stream is full."""
        if key[1] == "critical":
            st = self.outbox.stats("critical")
            if st.max_bytes and st.size_bytes >= st.max_bytes * CREDIT_FLOOR:
                self.counters["throttled"] += 1
                self._throttled.add(key)
                return 0
        return self.device_window

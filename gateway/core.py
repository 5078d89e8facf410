"""The gateway's sans-IO core: accept device records into the durable outbox, forward them to the cloud,
hold commands for devices.

Downstream, each device session starts with HELLO. A telemetry batch is
acknowledged only after its records are committed to the outbox (``Persisted``),
so an acknowledgement always means "durable here", and it grants the device a
credit: how many more records of that stream it may send (0 while the stream's
outbox quota is full: the device keeps them in its own buffer).

Upstream, each outbox stream is streamed to the cloud (critical first, then
state, then bulk) and entries are dropped only when the cloud acknowledges that
they are committed. An optional token bucket caps the uplink's byte rate, and
optional link windows (cron + duration) confine state and bulk traffic to the
hours a metered link may be used; critical traffic is never held back by a
window.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from datetime import UTC, datetime

from common.backoff import Backoff
from common.effects import (
    UPSTREAM,
    AckQueue,
    Append,
    Effect,
    Event,
    Firmware,
    InventoryTaken,
    LinkUp,
    Log,
    Malformed,
    PersistFailed,
    Persisted,
    QueueReader,
    Received,
    Send,
    SetTimer,
    Start,
    TakeInventory,
    TimerFired,
)
from common.errors import ProtocolError
from common.protocol import (
    STREAMS,
    SUPPORTED_VERSIONS,
    ChunkData,
    ChunkRequest,
    Command,
    CommandAck,
    ErrorReply,
    FirmwareOffer,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    GatewayStatus,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    OfferRequest,
    SitePlanEnvelope,
    TelemetryAck,
    TelemetryBatch,
    decode,
    decode_record,
    encode,
    encode_record,
    pack_entries,
)
from common.protocol.codec import TelemetryEntries
from common.shaping import LinkWindows, TokenBucket
from common.uplink import QueueSender, Uplink, agreed_version, silent_peers
from gateway.commands import HeldCommands
from gateway.rollout_effects import GATE, DeviceOutcome, ReleaseCommands, SitePlanArrived, SiteReport
from gateway.security import GatewaySecurity
from gateway.site_alerts import SiteAlerts

__all__ = ["COMMANDS", "GatewayCore", "OUTBOX", "gap_reports"]

OUTBOX = "outbox"
COMMANDS = "commands"
FRAME_OVERHEAD = 64  # bytes of a ForwardBatch beyond its blob, for the byte-rate cap
CAPPED_BATCH_SHARE = 0.01  # under a cap, a batch is at most this share of a second's bytes


def gap_reports(reporter: str, clock: Callable[[], int]) -> Callable[[str, str, list[tuple[int, bytes]]], list[tuple[str, bytes]]]:
    """The outbox's drop hook: a ``gap`` report per device, stream and contiguous range dropped.

    Reports carry sequence 0: the cloud knows them by their content, so a resend stores nothing twice.
    """

    def on_drop(stream: str, reason: str, dropped: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
        records = []
        for _, raw in dropped:
            try:
                rec = decode_record(raw)
            except ProtocolError:
                continue  # an entry that does not decode was never going to be delivered either
            if rec.seq > 0:
                records.append(rec)
        out = []
        records.sort(key=lambda r: (r.device_id, r.stream, r.seq))
        for (device, rstream), group in groupby(records, key=lambda r: (r.device_id, r.stream)):
            # consecutive sequences share seq - position: one run per contiguous range
            for _, run in groupby(enumerate(sorted({r.seq for r in group})), key=lambda t: t[1] - t[0]):
                seqs = [s for _, s in run]
                values = {"stream": rstream, "reason": reason, "first": seqs[0], "last": seqs[-1], "count": len(seqs), "reporter": reporter}
                out.append(("critical", encode_record(ForwardRecord(device, "critical", 0, clock(), "gap", values))))
        return out

    return on_drop


def _message_name(msg: object) -> str:
    """The wire message's name: a TelemetryBatch taken from a frame as TelemetryEntries is still a TelemetryBatch."""
    return "TelemetryBatch" if type(msg) is TelemetryEntries else type(msg).__name__


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
        commands: QueueReader | None = None,
        heartbeat_s: float = 1.0,
        ack_timeout_s: float = 5.0,
        batch_max: int = 1000,
        window: int = 8000,
        device_window: int = 2000,
        bucket: TokenBucket | None = None,
        link_windows: LinkWindows | None = None,
        status_interval_s: float = 5.0,
        security: GatewaySecurity | None = None,
        site_rollouts: bool = False,
        site_alerts: SiteAlerts | None = None,
        inventory_interval_s: float = 0.0,
    ) -> None:
        self.security = security  # enrollment relay, revocation and quarantine (gateway/security.py)
        self.gateway_id = gateway_id
        self.site_rollouts = site_rollouts  # run the site's part of rollouts (gateway.site_rollouts)
        self.released: dict[str, int] = {}  # device -> until when (ms) its site-gated commands may be delivered
        self.site_alerts = site_alerts  # alerts for its own devices while the uplink is down (site_alerts.py)
        self.inventory_interval_s = inventory_interval_s  # 0: the gateway reports no inventory of its own
        self.inventory: dict[str, object] | None = None  # the last one reported
        self.site = site
        self.outbox = outbox
        self.commands_queue = commands
        self.heartbeat_s = heartbeat_s
        self.device_window = device_window
        self.bucket = bucket
        self.batch_max = batch_max
        self.record_cost = 64.0  # compressed bytes a forwarded record costs (a running average)
        self.link_windows = link_windows
        self.status_interval_s = status_interval_s
        self.sessions: dict[str, DeviceSession] = {}
        self.peers: dict[str, str] = {}  # device -> its current peer
        self.accepted: dict[tuple[str, str], int] = {}  # (device, stream) -> highest sequence durable here
        self.pending: dict[tuple[str, str], int] = {}  # (device, stream) -> highest sequence being appended
        self.throttled: set[tuple[str, str]] = set()  # (device, stream) told credit 0
        self.held = HeldCommands()
        self.ping_held: dict[tuple[str, int], int] = {}  # ping commands: (device, seq) -> when held here (ms)
        self.counters = {
            "records_in": 0, "batches_in": 0, "resent_records": 0, "out_of_order": 0, "malformed": 0,
            "refused": 0, "throttled": 0, "commands_delivered": 0, "commands_expired": 0, "uplink_bytes": 0,
        }
        self.uplink = Uplink(
            Hello(gateway_id, "gateway", site, *SUPPORTED_VERSIONS),
            heartbeat_s=heartbeat_s,
            # an uplink back from an outage is tried again within 10 s; the first try after losing the
            # cloud is spread over 2 s so a cloud restart does not meet every gateway at once
            backoff=Backoff(initial_s=0.5, max_s=10.0, multiplier=2.0, rng=rng),
            first_spread_s=2.0,
        )
        self.senders = {
            s: QueueSender(OUTBOX, s, outbox, self._builder(s), batch_max=batch_max, window=window, ack_timeout_s=ack_timeout_s)
            for s in STREAMS
        }

    def _builder(self, stream: str):
        def build(items: list[tuple[int, bytes]]) -> ForwardBatch:
            base = self.senders[stream].acked
            blob = pack_entries([p for _, p in items])
            return ForwardBatch(self.gateway_id, self.site, stream, base, items[0][0], items[-1][0], blob)

        return build

    # -- events ----------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        if self.security is not None and (handled := self.security.intercept(self, event, now)) is not None:
            return handled
        match event:
            case Start():
                out = [*self.uplink.open(now), SetTimer("heartbeat", now + self.heartbeat_s)]
                if self.status_interval_s:
                    out.append(SetTimer("status", now + self.status_interval_s))
                if self.inventory_interval_s:
                    out.append(SetTimer("inventory", now))
                if self.commands_queue is not None:
                    items = self.commands_queue.read(after=0, limit=1_000_000, max_bytes=1 << 30)
                    self.held.load([(q, decode(p)) for q, p in items], self.commands_queue.stats().next_seq)
                return out
            case LinkUp():
                return self.uplink.open(now)
            case TimerFired("hello"):
                return self.uplink.retry_hello(now)
            case Received(peer, msg) if peer == UPSTREAM:
                return self._from_cloud(msg, now)
            case Received(peer, msg):
                return self._from_device(peer, msg, now)
            case Malformed(peer, error):
                self.counters["malformed"] += 1
                if peer == UPSTREAM:
                    return [Log("warning", "malformed frame from cloud", {"error": str(error)})]
                return [Send(peer, ErrorReply("malformed", str(error)))]
            case Persisted(("device", peer, device_id, stream, first, last), _):
                key = (device_id, stream)
                acked = self.accepted.get(key, 0)
                if first <= acked + 1:  # not after an append that failed
                    acked = self.accepted[key] = max(acked, last)
                out: list[Effect] = [Send(peer, TelemetryAck(device_id, stream, acked, self._credit(key)))] if acked else []
                return out + self._drain(now)
            case PersistFailed(("device", peer, device_id, stream, _, _), error):
                key = (device_id, stream)
                self.pending[key] = self.accepted.get(key, 0)
                self.counters["refused"] += 1
                self.throttled.add(key)
                return [
                    Send(peer, TelemetryAck(device_id, stream, self.accepted.get(key, 0), 0)),
                    Log("warning", "outbox refused records", {"device": device_id, "stream": stream, "error": str(error)}),
                ]
            case Persisted(("command", cmd), seqs):
                self.held.add(seqs[0], cmd)
                if cmd.name == "ping":  # its answer carries this gateway's times (per-hop timing)
                    self.ping_held[(cmd.device_id, cmd.seq)] = int(now * 1000)
                out = [Send(UPSTREAM, CommandAck(cmd.device_id, cmd.seq, "held", ""))]
                peer = self.peers.get(cmd.device_id)
                if peer is not None and peer in self.sessions and self._deliverable(cmd, now):
                    out.append(Send(peer, cmd))
                return out
            case ReleaseCommands(device_ids, not_after_ms):
                out = []
                for device_id in device_ids:
                    self.released[device_id] = not_after_ms
                    peer = self.peers.get(device_id)
                    if peer is not None and peer in self.sessions and now * 1000 < not_after_ms:
                        out += [Send(peer, c) for c in self.held.for_device(device_id) if c.args.get("gate") == GATE]
                return out
            case SiteReport(device_id, values):
                return [self._report(device_id, "rollout", dict(values), now)]
            case Persisted(("report", _), _):
                return self._drain(now)
            case TimerFired("heartbeat"):
                return [*self._tick(now), SetTimer("heartbeat", now + self.heartbeat_s)]
            case TimerFired("drain"):
                return self._drain(now)
            case TimerFired("inventory"):
                return [TakeInventory(), SetTimer("inventory", now + self.inventory_interval_s)]
            case InventoryTaken(values):
                if values == self.inventory:
                    return []  # reported on change only
                self.inventory = dict(values)
                return [self._report(self.gateway_id, "inventory", dict(values), now)]
            case TimerFired("status"):
                out = [SetTimer("status", now + self.status_interval_s)]
                if self.uplink.up:
                    out.append(Send(UPSTREAM, GatewayStatus(self.gateway_id, int(now * 1000), self.status(now))))
                return out
        return []

    # -- downstream ------------------------------------------------------------------

    def _from_device(self, peer: str, msg: Message, now: float) -> list[Effect]:
        session = self.sessions.get(peer)
        if session is not None:
            session.last_rx = now
            if self.site_alerts is not None:
                self.site_alerts.seen(session.device_id, int(now * 1000))
        match msg:
            case Hello(node_id, "device", _, low, high):
                version = agreed_version(peer, low, high)
                if isinstance(version, Send):
                    return [version]
                self.sessions[peer] = DeviceSession(node_id, now)
                self.peers[node_id] = peer
                if self.site_alerts is not None:
                    self.site_alerts.seen(node_id, int(now * 1000))
                out: list[Effect] = [Send(peer, HelloAck(self.gateway_id, version, int(self.heartbeat_s * 1000), self.device_window))]
                return out + [Send(peer, c) for c in self.held.for_device(node_id) if self._deliverable(c, now)]
            case Hello(node_id=node_id, role=role):
                return [Send(peer, ErrorReply("role", f"{node_id!r} said role {role!r}; this gateway serves devices"))]
            case _ if session is None:
                return [Send(peer, ErrorReply("hello-first", f"send Hello before {_message_name(msg)}"))]
            case TelemetryBatch() | TelemetryEntries():
                batch = msg if type(msg) is TelemetryEntries else TelemetryEntries.of(msg)
                device_id, stream = batch.device_id, batch.stream
                if device_id != session.device_id:
                    return [Send(peer, ErrorReply("wrong-device", f"session is {session.device_id!r}, batch says {device_id!r}"))]
                if stream not in self.senders:
                    return [Send(peer, ErrorReply("bad-stream", f"unknown stream {stream!r}; streams are {', '.join(STREAMS)}"))]
                if self.site_alerts is not None:
                    self._observe_site(batch, now)
                return self._accept(peer, batch)
            case CommandAck(device_id, seq, status, detail) if device_id == session.device_id:
                return self._command_done(device_id, seq, status, detail, now)
            case OfferRequest() | ChunkRequest():
                return [Firmware(peer, session.device_id, msg)]
            case Heartbeat():
                out = [Send(peer, Heartbeat(int(now * 1000)))]
                # a device told to hold back hears when it may send again
                for key in [k for k in self.throttled if k[0] == session.device_id]:
                    credit = self._credit(key)
                    if credit:
                        self.throttled.discard(key)
                        out.append(Send(peer, TelemetryAck(key[0], key[1], self.accepted.get(key, 0), credit)))
                return out
        return [Send(peer, ErrorReply("unexpected", f"{type(msg).__name__} is not handled by a gateway"))]

    def _observe_site(self, batch: TelemetryEntries, now: float) -> None:
        """Feed the site's alert engine the records the codec already checked (no decoding here)."""
        assert self.site_alerts is not None
        self.site_alerts.batch(batch.device_id, batch.records, int(now * 1000), self.uplink.up)

    def _site_alert_reports(self, now: float) -> list[Effect]:
        if self.site_alerts is None:
            return []
        reports = self.site_alerts.tick(int(now * 1000), self.uplink.up)
        return [Append(OUTBOX, "critical", [encode_record(r)], ("report", "alert")) for r in reports]

    def _credit(self, key: tuple[str, str]) -> int:
        """Records the device may send beyond its acknowledgement: none while a refusing stream is full."""
        stream = key[1]
        if stream == "critical":
            st = self.outbox.stats(stream)
            if st.max_bytes and st.size_bytes >= st.max_bytes * 0.95:
                self.counters["throttled"] += 1
                self.throttled.add(key)
                return 0
        return self.device_window

    def _accept(self, peer: str, batch: TelemetryEntries) -> list[Effect]:
        """Append the records that extend this device's contiguous run; acknowledge only that run.

        Records after a gap (a lost or reordered batch) are not taken: the device
        sends them again after the missing ones, so a cumulative acknowledgement
        never covers a record this gateway does not hold.
        """
        device_id, stream, seqs = batch.device_id, batch.stream, batch.seqs
        key = (device_id, stream)
        self.counters["batches_in"] += 1
        if batch.base > self.accepted.get(key, 0):
            self.accepted[key] = batch.base  # acknowledged before (by this gateway before a restart, or another)
        expect = max(self.accepted.get(key, 0), self.pending.get(key, 0)) + 1
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
            acked = self.accepted.get(key, 0)
            return [Send(peer, TelemetryAck(device_id, stream, acked, self._credit(key)))] if acked else []
        self.counters["records_in"] += len(payloads)
        self.pending[key] = last
        out: list[Effect] = [Append(OUTBOX, stream, payloads, ("device", peer, device_id, stream, first, last))]
        if self.site_rollouts and stream == "critical":  # update outcomes feed the site's rollout
            out += [DeviceOutcome(device_id, dict(r[3])) for r in records if r[2] == "update"]
        return out

    # -- commands --------------------------------------------------------------------

    def _deliverable(self, cmd: Command, now: float) -> bool:
        """A site-gated command (a rollout's install) waits until the site's rollout releases its device, and is
        not delivered after the release's deadline (the maintenance window closed: the rollout releases it again)."""
        return cmd.args.get("gate") != GATE or now * 1000 < self.released.get(cmd.device_id, 0)

    def _report(self, device_id: str, kind: str, values: dict[str, float | str], now: float) -> Append:
        """A report (sequence 0: identified by its content, not its number) for the cloud, via the critical outbox."""
        rec = ForwardRecord(device_id, "critical", 0, int(now * 1000), kind, values)
        return Append(OUTBOX, "critical", [encode_record(rec)], ("report", kind))

    def _command_done(self, device_id: str, seq: int, status: str, detail: str, now: float) -> list[Effect]:
        cmd = self.held.finish(device_id, seq)
        if cmd is None:
            return []  # a repeated acknowledgement
        self.counters["commands_delivered"] += 1
        held_ms = self.ping_held.pop((device_id, seq), None)
        if cmd.name == "ping" and held_ms is not None:
            detail = f"{detail} gateway_held_ms={held_ms} gateway_done_ms={int(now * 1000)}"
        out: list[Effect] = [self._report(device_id, "command", {"seq": seq, "status": status, "detail": detail}, now)]
        up_to = self.held.ackable()
        if up_to is not None:
            out.append(AckQueue(COMMANDS, "default", up_to))
        return out

    def _command_from_cloud(self, cmd: Command) -> list[Effect]:
        if self.held.has(cmd.device_id, cmd.seq):
            return [Send(UPSTREAM, CommandAck(cmd.device_id, cmd.seq, "held", "again"))]
        return [Append(COMMANDS, "default", [encode(cmd)], ("command", cmd))]

    # -- upstream --------------------------------------------------------------------

    def _from_cloud(self, msg: Message, now: float) -> list[Effect]:
        if self.uplink.received(msg, now):
            for snd in self.senders.values():
                snd.rewind()
            return [Log("info", "cloud session up", {"version": self.uplink.version}), *self._drain(now)]
        match msg:
            case ForwardAck(stream, up_to, _, _) if stream in self.senders:
                return [*self.senders[stream].acknowledged(up_to, now), *self._drain(now)]
            case Command() if self.commands_queue is not None:
                return self._command_from_cloud(msg)
            case FirmwareOffer() | ChunkData():
                return [Firmware("", "", msg)]
            case SitePlanEnvelope(rollout_id, blob) if self.site_rollouts:
                return [SitePlanArrived(rollout_id, blob)]
            case ErrorReply("hello-first", _):
                return self.uplink.open(now)
            case ErrorReply(code, detail):
                return [Log("warning", "cloud refused a message", {"code": code, "detail": detail})]
        return []

    def _drain(self, now: float) -> list[Effect]:
        """Send what the windows, the byte-rate cap and the link allow, critical first."""
        if not self.uplink.up:
            return []
        out: list[Effect] = []
        at = datetime.fromtimestamp(now, UTC)
        window_open = self.link_windows is None or self.link_windows.is_open(at)
        capped = False

        def budget(msg: ForwardBatch) -> bool:
            nonlocal capped
            cost = len(msg.blob) + FRAME_OVERHEAD
            if self.bucket is not None and not self.bucket.take(cost, now):
                capped = True
                return False
            self.counters["uplink_bytes"] += cost
            # what a record costs on the wire, compressed: sizes the next batches under a cap
            self.record_cost += 0.2 * (cost / (msg.last - msg.first + 1) - self.record_cost)
            return True

        if self.bucket is not None:
            # Under a byte-rate cap a batch is a small slice of a second of link time, so the cap holds
            # within every second (not one batch over it) and the drain timer keeps the link busy.
            per_batch = max(10, int(self.bucket.rate * CAPPED_BATCH_SHARE / self.record_cost))
            for snd in self.senders.values():
                snd.batch_max = min(self.batch_max, per_batch)
        for stream, snd in self.senders.items():
            if stream != "critical" and not window_open:
                continue
            out += snd.pump(now, budget)
            if capped:
                break
        if capped and self.bucket is not None:
            next_cost = int(self.senders["bulk"].batch_max * self.record_cost) + FRAME_OVERHEAD
            out.append(SetTimer("drain", now + max(self.bucket.wait_time(next_cost, now), 0.005)))
        elif not window_open and self.link_windows is not None:
            nxt = self.link_windows.next_open(at)
            if nxt is not None:
                out.append(SetTimer("drain", nxt.timestamp()))
        return out

    def _tick(self, now: float) -> list[Effect]:
        out = self.uplink.tick(now)
        if self.uplink.up and any([snd.tick(now) for snd in self.senders.values()]):
            out += self._drain(now)
        for peer in silent_peers(self.sessions, now, self.heartbeat_s):
            device = self.sessions.pop(peer).device_id
            if self.peers.get(device) == peer:
                del self.peers[device]
            out.append(Log("info", "device silent: session closed", {"device": device}))
        for cmd in self.held.expired(int(now * 1000)):
            self.counters["commands_expired"] += 1
            out.append(self._report(cmd.device_id, "command", {"seq": cmd.seq, "status": "expired", "detail": "expired at the gateway"}, now))
        if (up_to := self.held.ackable()) is not None:
            out.append(AckQueue(COMMANDS, "default", up_to))
        out += self._site_alert_reports(now)
        return out

    def status(self, now: float) -> dict[str, float | str]:
        """The gateway's health in numbers (sent to the cloud as GatewayStatus)."""
        values: dict[str, float | str] = {"link": "up" if self.uplink.up else "down", "devices_connected": len(self.sessions)}
        disk = quota = 0
        for s in STREAMS:
            st = self.outbox.stats(s)
            values[f"backlog.{s}.records"] = st.count
            values[f"backlog.{s}.bytes"] = st.size_bytes
            values[f"quota.{s}.bytes"] = st.max_bytes
            values[f"oldest_age_s.{s}"] = round(st.oldest_age_ms / 1000, 1)
            values[f"evicted.{s}"] = st.evicted
            values[f"expired.{s}"] = st.expired
            disk += st.size_bytes
            quota += st.max_bytes
        values["disk.bytes"], values["disk.quota"] = disk, quota
        values["commands_held"] = len(self.held.held)
        for k in ("records_in", "refused", "throttled", "malformed", "uplink_bytes"):
            values[k] = self.counters[k]
        return values

"""The gateway's sans-IO core: accept device records into the durable outbox, forward them to the cloud,
hold commands for devices.

``GatewayCore.handle(event, now) -> effects`` only dispatches: each event goes to
the part that owns it, and the effects they return are concatenated in order.
The parts, each sans-IO in its own module with its own tests:

- ``gateway.sessions.DeviceSessions``: device sessions, telemetry accepted into
  the outbox (acknowledged once durable), and the credit devices get;
- ``gateway.uplink_drain.UplinkDrain``: the cloud session and the outbox drained
  over it, critical first, under the byte-rate cap and the link windows;
- ``gateway.command_relay.CommandRelay``: commands held for devices, and the
  site gate a rollout opens;
- ``gateway.rollout_relay.RolloutRelay``: site plans and update outcomes for the
  site's rollout runner, and its reports for the cloud;
- ``gateway.site_alerts.SiteAlerts``: the site's own alerts while the uplink is down;
- ``gateway.status.StatusReports``: the gateway's status and inventory;
- ``gateway.ddi.core.DdiDevices`` (optional): devices that poll over hawkBit's DDI API, their records
  made here, their actions the command relay's held update commands;
- ``gateway.security.GatewaySecurity`` (optional): sees every event first, and the
  core only through ``CoreView`` (the four methods below under "the security view").

A telemetry batch arrives as ``TelemetryEntries``: its records already checked
by the codec, each already its outbox entry. The observers (site alerts, rollout
outcomes) read those checked records; nothing on the ack path decodes a record.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from common.effects import (
    UPSTREAM,
    Effect,
    Event,
    Firmware,
    InventoryTaken,
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
from common.protocol import (
    ChunkData,
    ChunkRequest,
    Command,
    CommandAck,
    DdiCredentials,
    ErrorReply,
    FirmwareOffer,
    ForwardAck,
    Heartbeat,
    Hello,
    Message,
    OfferRequest,
    SitePlanEnvelope,
    TelemetryBatch,
)
from common.protocol.codec import TelemetryEntries
from common.key_binding import KeyBindings
from common.security_events import PeerKey
from common.shaping import LinkWindows, TokenBucket
from common.uplink import QueueSender, Uplink
from gateway.command_relay import CommandRelay
from gateway.ddi.core import DdiDevices
from gateway.ddi.events import ArtifactFailed, ArtifactReady, DdiRequest, DdiTokensApplied, StoreDdiTokens
from gateway.ddi.tokens import DdiTokens
from gateway.reports import COMMANDS, OUTBOX, gap_reports
from gateway.rollout_effects import ReleaseCommands, SiteReport
from gateway.rollout_relay import RolloutRelay
from gateway.security import GatewaySecurity
from gateway.sessions import DeviceSession, DeviceSessions
from gateway.site_alerts import SiteAlerts
from gateway.status import StatusReports
from gateway.uplink_drain import FRAME_OVERHEAD, UplinkDrain

__all__ = ["COMMANDS", "FRAME_OVERHEAD", "OUTBOX", "GatewayCore", "gap_reports"]

COUNTERS = ("records_in", "batches_in", "resent_records", "out_of_order", "malformed", "refused", "throttled",
            "commands_delivered", "commands_expired", "uplink_bytes")


def _message_name(msg: object) -> str:
    """The wire message's name: a TelemetryBatch taken from a frame as TelemetryEntries is still a TelemetryBatch."""
    return "TelemetryBatch" if type(msg) is TelemetryEntries else type(msg).__name__


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
        ddi_tokens: DdiTokens | None = None,
        ddi_tenant: str = "default",
        ddi_poll_s: float = 60.0,
    ) -> None:
        self.gateway_id = gateway_id
        self.site = site
        self.heartbeat_s = heartbeat_s
        self.security = security  # enrollment relay, revocation and quarantine (gateway/security.py)
        self.bindings = KeyBindings()  # each device key's one device id (common.key_binding)
        self.downstream = DeviceSessions(gateway_id, outbox, heartbeat_s=heartbeat_s, device_window=device_window)
        self.drain = UplinkDrain(gateway_id, site, outbox, rng=rng, heartbeat_s=heartbeat_s, ack_timeout_s=ack_timeout_s,
                                 batch_max=batch_max, window=window, bucket=bucket, link_windows=link_windows)
        self.commands = CommandRelay(commands, connected=self.downstream.peer_of)
        self.rollouts = RolloutRelay(site_rollouts)  # the site's part of rollouts (gateway.site_rollouts)
        self.site_alerts = site_alerts  # alerts for its own devices while the uplink is down (site_alerts.py)
        self.reports = StatusReports(gateway_id, outbox, status_interval_s=status_interval_s,
                                     inventory_interval_s=inventory_interval_s)
        self.malformed = 0
        self.ddi = (DdiDevices(gateway_id, site, self.commands, ddi_tokens, tenant=ddi_tenant, poll_s=ddi_poll_s,
                               revoked=lambda: security.revoked if security is not None else frozenset(),
                               site_rollouts=site_rollouts, seen=self._seen)
                    if ddi_tokens is not None else None)  # devices polling over hawkBit's DDI (gateway/ddi/)

    # -- what drivers, tests and simulations read ----------------------------------------

    @property
    def uplink(self) -> Uplink:
        return self.drain.uplink

    @property
    def senders(self) -> Mapping[str, QueueSender]:
        return self.drain.senders

    @property
    def sessions(self) -> Mapping[str, DeviceSession]:
        return self.downstream.sessions

    @property
    def accepted(self) -> Mapping[tuple[str, str], int]:
        return self.downstream.accepted

    @property
    def commands_queue(self) -> QueueReader | None:
        return self.commands.queue

    @property
    def counters(self) -> dict[str, int]:
        parts = {**self.downstream.counters, **self.commands.counters, **self.drain.counters, "malformed": self.malformed}
        return {k: parts[k] for k in COUNTERS}

    def status(self, now: float) -> dict[str, float | str]:
        """The gateway's health in numbers (sent to the cloud as GatewayStatus)."""
        return self.reports.values(now, link_up=self.drain.up, devices_connected=len(self.downstream),
                                   commands_held=self.commands.count(), counters=self.counters)

    # -- the security view (gateway.security.CoreView) -----------------------------------

    @property
    def link_up(self) -> bool:
        return self.drain.up

    def device_of(self, peer: str) -> str | None:
        return self.downstream.device_of(peer)

    def open_sessions(self) -> list[tuple[str, str]]:
        return self.downstream.open_sessions()

    def close_session(self, peer: str) -> str | None:
        return self.downstream.close(peer)

    # -- events ----------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        if isinstance(event, PeerKey):  # a device key is bound to one device id, with or without a CA
            self.bindings.peer(event.peer, event.curve_key, event.name)
        elif isinstance(event, Received) and isinstance(event.msg, Hello) and event.peer != UPSTREAM:
            if (why := self.bindings.check(event.peer, event.msg.node_id)) is not None:
                if self.security is not None:  # reported with the gateway's security counters
                    self.security.counters["identity_mismatch"] += 1
                return [Send(event.peer, ErrorReply("identity", why[:256])),
                        Log("warning", "device Hello refused", {"device": event.msg.node_id, "error": why})]
        if self.security is not None and (screened := self.security.intercept(self, event, now)) is not None:
            if screened.handled:
                return screened.effects
            return screened.effects + self._dispatch(event, now)
        return self._dispatch(event, now)

    def _seen(self, device_id: str, now_ms: int) -> None:
        if self.site_alerts is not None:
            self.site_alerts.seen(device_id, now_ms)

    def _dispatch(self, event: Event, now: float) -> list[Effect]:
        if self.ddi is not None:
            match event:
                case DdiRequest():
                    return self.ddi.request(event, now)
                case Persisted(("ddi", *_) as token, _):
                    return self.ddi.persisted(token) + self.drain.drain(now)
                case PersistFailed(("ddi", *_) as token, error):
                    return self.ddi.persist_failed(token, str(error))
                case ArtifactReady():
                    return self.ddi.artifact_ready(event)
                case ArtifactFailed():
                    return self.ddi.artifact_failed(event)
                case DdiTokensApplied(msg):
                    self.ddi.tokens = DdiTokens.from_message(msg, self.ddi.tokens.gateway_token_hash)
                    return [Log("info", "DDI credentials in force", {"version": msg.version, "devices": len(msg.devices)})]
        match event:
            case Received(peer, msg) if peer == UPSTREAM:
                return self._from_cloud(msg, now)
            case Received(peer, msg):
                return self._from_device(peer, msg, now)
            case Persisted(("device", peer, device_id, stream, first, last), _):
                return self.downstream.persisted(peer, device_id, stream, first, last) + self.drain.drain(now)
            case PersistFailed(("device", peer, device_id, stream, _, _), error):
                return self.downstream.persist_failed(peer, device_id, stream, error)
            case Persisted(("command", cmd), seqs):
                return self.commands.persisted(cmd, seqs[0], now)
            case Persisted(("report", _), _) | TimerFired("drain"):
                return self.drain.drain(now)
            case TimerFired("heartbeat"):
                return [*self._tick(now), SetTimer("heartbeat", now + self.heartbeat_s)]
            case Start():
                self.commands.start()
                return [*self.drain.open(now), SetTimer("heartbeat", now + self.heartbeat_s), *self.reports.timers(now)]
            case LinkUp():
                return self.drain.open(now)
            case TimerFired("hello"):
                return self.drain.retry_hello(now)
            case Malformed(peer, error):
                self.malformed += 1
                if peer == UPSTREAM:
                    return [Log("warning", "malformed frame from cloud", {"error": str(error)})]
                return [Send(peer, ErrorReply("malformed", str(error)))]
            case ReleaseCommands(device_ids, not_after_ms, rollout_id):
                return self.commands.release(device_ids, not_after_ms, now, rollout_id)
            case SiteReport():
                return self.rollouts.report(event, now)
            case TimerFired("inventory"):
                return self.reports.inventory_due(now)
            case InventoryTaken(values):
                return self.reports.inventory_taken(values, now)
            case TimerFired("status"):
                out: list[Effect] = [self.reports.next_status(now)]
                if self.drain.up:
                    out.append(self.reports.send(self.status(now), now))
                return out
        return []

    def _tick(self, now: float) -> list[Effect]:
        out = self.drain.tick(now) + self.downstream.close_silent(now) + self.commands.tick(now)
        if self.ddi is not None:
            out += self.ddi.expired(now)
        if self.site_alerts is not None:
            out += self.site_alerts.reports(now, self.drain.up)
        return out

    def _from_device(self, peer: str, msg: Message | TelemetryEntries, now: float) -> list[Effect]:
        device = self.downstream.touch(peer, now)
        if device is not None and self.site_alerts is not None:
            self.site_alerts.seen(device, int(now * 1000))
        match msg:
            case Hello():
                out, opened = self.downstream.hello(peer, msg, now)
                if not opened:
                    return out
                if self.site_alerts is not None:
                    self.site_alerts.seen(msg.node_id, int(now * 1000))
                return out + self.commands.deliverable(msg.node_id, peer, now)
            case _ if device is None:
                return [Send(peer, ErrorReply("hello-first", f"send Hello before {_message_name(msg)}"))]
            case TelemetryEntries() | TelemetryBatch():
                batch = msg if type(msg) is TelemetryEntries else TelemetryEntries.of(msg)
                refused = self.downstream.refusal(peer, device, batch)
                if refused:
                    return refused
                if self.site_alerts is not None:
                    self.site_alerts.batch(device, batch.records, int(now * 1000), self.drain.up)
                out, taken = self.downstream.accept(peer, batch)
                if self.rollouts.enabled:
                    out += self.rollouts.outcomes(device, batch.stream, taken)
                return out
            case CommandAck(device_id, seq, status, detail) if device_id == device:
                return self.commands.done(device_id, seq, status, detail, now)
            case OfferRequest() | ChunkRequest():
                return [Firmware(peer, device, msg)]
            case Heartbeat():
                return self.downstream.heartbeat(peer, device, now)
        return [Send(peer, ErrorReply("unexpected", f"{type(msg).__name__} is not handled by a gateway"))]

    def _from_cloud(self, msg: Message, now: float) -> list[Effect]:
        if self.drain.session(msg, now):
            up = [Log("info", "cloud session up", {"version": self.uplink.version}), *self.drain.drain(now)]
            return up + self.security.cloud_session_up() if self.security is not None else up
        match msg:
            case ForwardAck(stream, up_to, _, _):
                return self.drain.acknowledged(stream, up_to, now)
            case Command():
                return self.commands.from_cloud(msg)
            case FirmwareOffer() | ChunkData():
                return [Firmware("", "", msg)]
            case SitePlanEnvelope():
                return self.rollouts.plan(msg)
            case DdiCredentials() if self.ddi is not None:
                if msg.site != self.site or not self.ddi.tokens.newer(msg):
                    return []
                return [StoreDdiTokens(msg)]  # on disk first (the driver), then in force (DdiTokensApplied)
            case ErrorReply("hello-first", _):
                return self.drain.open(now)
            case ErrorReply(code, detail):
                return [Log("warning", "cloud refused a message", {"code": code, "detail": detail})]
        return []

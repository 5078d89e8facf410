"""The device agent's sans-IO core: sample, buffer durably, stream to the gateway.

Each record is appended to one stream of the device's durable buffer
(``critical``, ``state`` or ``bulk``); the stream's sequence is the record's
sequence, assigned here at the origin and never reused. Records leave the
buffer only when the gateway acknowledges that they are durable there. Streams
are sent highest priority first, each within the credit the gateway grants.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from common.backoff import Backoff
from common.effects import (
    UPSTREAM,
    Append,
    Buffered,
    CommandResult,
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
    Reconnect,
    RunCommand,
    Sampled,
    Send,
    SetTimer,
    Start,
    Stop,
    TakeInventory,
    TakeSample,
    TimerFired,
)
from common.install_deadline import DEFERRED
from common.protocol import (
    STREAMS,
    SUPPORTED_VERSIONS,
    ChunkData,
    Command,
    CommandAck,
    ErrorReply,
    FirmwareOffer,
    Hello,
    HelloAck,
    TelemetryAck,
    TelemetryBatch,
    decode_sample,
    encode_sample,
)
from common.protocol.messages import EnrollReply, KeyRotation
from common.security_events import InstallRotation, PrepareRotation, RotateNow, RotationInstalled, RotationKeyReady
from common.uplink import QueueSender, Uplink
from device_agent.commands import RunWindow

if TYPE_CHECKING:
    from common.rotation import RotationSchedule  # apscheduler and x509: loaded only by an agent that has a certificate

__all__ = ["AgentCore", "BUFFER", "gap_record"]

BUFFER = "buffer"


def gap_record(reporter: str, clock: Callable[[], int]) -> Callable[[str, str, list[tuple[int, bytes]]], list[tuple[str, bytes]]]:
    """The buffer's drop hook: one critical ``gap`` record per dropped range (drops come off the front,
    so each call's sequences are contiguous). ``clock`` gives the record's wall-clock timestamp."""

    def on_drop(stream: str, reason: str, dropped: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
        first, last = dropped[0][0], dropped[-1][0]
        values = {"stream": stream, "reason": reason, "first": first, "last": last, "count": len(dropped), "reporter": reporter}
        return [("critical", encode_sample(clock(), "gap", values))]

    return on_drop


class AgentCore:
    """Feed it events with ``handle(event, now)``; run the effects it returns."""

    def __init__(
        self,
        device_id: str,
        site: str,
        buffer: QueueReader,
        *,
        rng: random.Random,
        sample_interval_s: float = 1.0,
        heartbeat_s: float = 1.0,
        ack_timeout_s: float = 5.0,
        batch_max: int = 200,
        window: int = 2000,
        ran: RunWindow | None = None,
        rejoin_spread_s: float = 8.0,
        command_check: Callable[[Command, int], str | None] | None = None,
        rotation: RotationSchedule | None = None,
        inventory_interval_s: float = 60.0,
    ) -> None:
        # key and certificate rotation (common.rotation): checked on its schedule and on each session start
        self.rotation = rotation
        self.rotating = False
        self.rotations = 0
        self.device_id = device_id
        # the cloud's signature on each command (common.command_auth): None accepts unsigned commands
        self.command_check = command_check
        self.commands_run: list[int] = []  # numbers run by this process, in order
        self.commands_refused: dict[int, str] = {}  # number -> why it was not run
        self.rng = rng
        self.rejoin_spread_s = rejoin_spread_s
        self.ran = ran or RunWindow()  # which command numbers have run (the driver persists its own copy first)
        self.running: set[int] = set()
        self.sample_interval_s = sample_interval_s
        self.inventory_interval_s = inventory_interval_s
        self.inventory: dict[str, object] | None = None  # the last inventory reported (None: none since start)
        self.heartbeat_s = heartbeat_s
        self.sampling = True
        self.produced = {s: 0 for s in STREAMS}
        self.last_seq = {s: 0 for s in STREAMS}
        self.appending = 0  # records handed to the buffer, not yet committed
        self.uplink = Uplink(
            Hello(device_id, "device", site, *SUPPORTED_VERSIONS),
            heartbeat_s=heartbeat_s,
            backoff=Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, rng=rng),
            first_spread_s=rejoin_spread_s,
        )
        self.senders = {
            s: QueueSender(
                BUFFER,
                s,
                buffer,
                self._builder(s),
                batch_max=batch_max,
                window=window,
                ack_timeout_s=ack_timeout_s,
            )
            for s in STREAMS
        }

    def _builder(self, stream: str):
        def build(items: list[tuple[int, bytes]]) -> TelemetryBatch:
            base = self.senders[stream].acked
            return TelemetryBatch(self.device_id, stream, base, [decode_sample(s, p) for s, p in items])

        return build

    @property
    def drained(self) -> bool:
        """Everything produced is committed locally and acknowledged by the gateway."""
        return self.appending == 0 and all(
            snd.acked >= self.last_seq[s] and snd.idle for s, snd in self.senders.items()
        )

    def record(self, stream: str, kind: str, values: dict[str, float | str], now: float) -> list[Effect]:
        """Buffer one record of ``kind`` in ``stream`` (samples are ``bulk``; results and alerts ``critical``)."""
        self.appending += 1
        return [Append(BUFFER, stream, [encode_sample(int(now * 1000), kind, values)], ("record", stream))]

    def handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Start():
                return [
                    *self.uplink.open(now),
                    SetTimer("sample", now),
                    SetTimer("heartbeat", now + self.heartbeat_s),
                    *([SetTimer("rotate-check", self.rotation.next_check(now))] if self.rotation is not None else []),
                    SetTimer("inventory", now),
                ]
            case TimerFired("rotate-check") if self.rotation is not None:
                return [*self._maybe_rotate(now), SetTimer("rotate-check", self.rotation.next_check(now))]
            case RotateNow():
                return self._maybe_rotate(now, force=True)
            case RotationKeyReady(public):
                return [Send(UPSTREAM, KeyRotation(self.device_id, public))] if self.uplink.up else self._rotation_failed("link down")
            case RotationInstalled(not_before_ms, not_after_ms):
                self.rotating = False
                self.rotations += 1
                if self.rotation is not None:
                    self.rotation = replace(self.rotation, not_before_ms=not_before_ms, not_after_ms=not_after_ms)
                return [Log("info", "key and certificate rotated", {"not_after_ms": not_after_ms}), Reconnect(0.0)]
            case LinkUp() | TimerFired("rejoin"):
                return self.uplink.open(now)
            case TimerFired("hello"):
                return self.uplink.retry_hello(now)
            case Received(peer, msg) if peer == UPSTREAM:
                return self._received(msg, now)
            case Malformed(_, error):
                return [Log("warning", "malformed frame from gateway", {"error": str(error)})]
            case TimerFired("sample"):
                if not self.sampling:
                    return []
                return [TakeSample(), SetTimer("sample", now + self.sample_interval_s)]
            case TimerFired("heartbeat"):
                out = self.uplink.tick(now)
                if self.uplink.up and any([snd.tick(now) for snd in self.senders.values()]):
                    out += self._pump(now)
                return [*out, SetTimer("heartbeat", now + self.heartbeat_s)]
            case TimerFired("inventory"):
                return [TakeInventory(), SetTimer("inventory", now + self.inventory_interval_s)]
            case InventoryTaken(values):
                # reported on change only (and once per start), in the state stream
                if values == self.inventory:
                    return []
                self.inventory = dict(values)
                return self.record("state", "inventory", dict(values), now)
            case Sampled(values):
                return self.record("bulk", "metrics", values, now) if self.sampling else []
            case Persisted(("record", stream), seqs):
                self.appending -= 1
                self.produced[stream] += len(seqs)
                self.last_seq[stream] = seqs[-1]
                return self._pump(now)
            case PersistFailed(("record", stream), error):
                self.appending -= 1
                return [Log("error", "record not buffered", {"stream": stream, "error": str(error)})]
            case Buffered():
                return self._pump(now)
            case CommandResult(seq, status, detail):
                self.running.discard(seq)
                if status != DEFERRED:  # deferred: not run (a late install); it may come again
                    self.ran.add(seq)
                return [Send(UPSTREAM, CommandAck(self.device_id, seq, status, detail))]
            case Stop():
                self.sampling = False
                return []
        return []

    def _maybe_rotate(self, now: float, force: bool = False) -> list[Effect]:
        if self.rotating or self.rotation is None or not self.uplink.up:
            return []
        if not force and not self.rotation.due(int(now * 1000)):
            return []
        self.rotating = True
        return [PrepareRotation()]

    def _rotation_failed(self, why: str) -> list[Effect]:
        self.rotating = False  # tried again at the next check
        return [Log("warning", "key rotation not done", {"reason": why})]

    def _pump(self, now: float) -> list[Effect]:
        if not self.uplink.up:
            return []
        out: list[Effect] = []
        for snd in self.senders.values():  # STREAMS order: critical first
            out += snd.pump(now)
        return out

    def _received(self, msg: object, now: float) -> list[Effect]:
        if self.uplink.received(msg, now):  # type: ignore[arg-type]
            assert isinstance(msg, HelloAck)
            for snd in self.senders.values():
                snd.window = msg.window
                snd.rewind()
            return [Log("info", "gateway session up", {"version": self.uplink.version}), *self._pump(now),
                    *self._maybe_rotate(now)]  # back from offline past its rotation time: rotate while still valid
        match msg:
            case TelemetryAck(device_id, stream, up_to, credit) if device_id == self.device_id and stream in self.senders:
                snd = self.senders[stream]
                snd.window = credit
                return [*snd.acknowledged(up_to, now), *self._pump(now)]
            case Command(device_id, seq, _, _, expires_ms) if device_id == self.device_id:
                if self.command_check is not None and (why := self.command_check(msg, int(now * 1000))) is not None:
                    self.commands_refused[seq] = why
                    return [Send(UPSTREAM, CommandAck(device_id, seq, "failed", f"refused: {why}"[:256])),
                            Log("warning", "command refused", {"seq": seq, "reason": why})]
                if self.ran.ran(seq):
                    return [Send(UPSTREAM, CommandAck(device_id, seq, "done", "already run"))]
                if expires_ms <= now * 1000:
                    return [Send(UPSTREAM, CommandAck(device_id, seq, "failed", "expired before it reached the device"))]
                if seq in self.running:
                    return []
                self.running.add(seq)
                self.commands_run.append(seq)
                return [RunCommand(msg)]
            case FirmwareOffer() | ChunkData():
                return [Firmware("", "", msg)]
            case EnrollReply(device_id=device_id, outcome=outcome, detail=detail) if device_id == self.device_id and self.rotating:
                return [InstallRotation(msg)] if outcome == "accept" else self._rotation_failed(detail)
            case ErrorReply("hello-first", _) if self.uplink.state != "waiting":
                # The gateway restarted and forgot this session. Every device of the site hears this at
                # once, so each waits a random part of the spread before saying Hello again: a restarted
                # gateway meets its devices a few at a time, not all in the same second.
                self.uplink.state = "waiting"
                return [SetTimer("rejoin", now + self.rng.uniform(0, self.rejoin_spread_s))]
            case ErrorReply(code, detail):
                return [Log("warning", "gateway refused a message", {"code": code, "detail": detail})]
        return []

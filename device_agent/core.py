"""The device agent's sans-IO core: sample, buffer durably, stream to the gateway.

Each sample is appended to the device's durable buffer; the buffer's sequence
is the record's sequence, assigned here at the origin and never reused. Records
leave the buffer only when the gateway acknowledges that they are durable there.
"""

from __future__ import annotations

import random

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
    Sampled,
    SetTimer,
    Start,
    Stop,
    TakeSample,
    TimerFired,
)
from common.protocol import (
    SUPPORTED_VERSIONS,
    ErrorReply,
    Hello,
    TelemetryAck,
    TelemetryBatch,
    decode_sample,
    encode_sample,
)
from common.uplink import QueueSender, Uplink

__all__ = ["AgentCore", "BUFFER"]

BUFFER = "buffer"


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
        stream: str = "metrics",
    ) -> None:
        self.device_id = device_id
        self.stream = stream
        self.sample_interval_s = sample_interval_s
        self.heartbeat_s = heartbeat_s
        self.sampling = True
        self.produced = 0
        self.last_seq = 0
        self.appending = 0  # samples handed to the buffer, not yet committed
        self.uplink = Uplink(
            Hello(device_id, "device", site, *SUPPORTED_VERSIONS),
            heartbeat_s=heartbeat_s,
            backoff=Backoff(initial_s=0.5, max_s=30.0, multiplier=2.0, rng=rng),
        )
        self.sender = QueueSender(
            BUFFER,
            buffer,
            lambda items: TelemetryBatch(device_id, self.sender.acked, [decode_sample(s, p) for s, p in items]),
            batch_max=batch_max,
            window=window,
            ack_timeout_s=ack_timeout_s,
        )

    @property
    def drained(self) -> bool:
        """Everything produced is committed locally and acknowledged by the gateway."""
        return self.appending == 0 and self.sender.acked >= self.last_seq and self.sender.idle

    def handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Start():
                return [
                    *self.uplink.open(now),
                    SetTimer("sample", now),
                    SetTimer("heartbeat", now + self.heartbeat_s),
                ]
            case LinkUp():
                return self.uplink.open(now)
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
                if self.uplink.up:
                    out += self.sender.tick(now)
                return [*out, SetTimer("heartbeat", now + self.heartbeat_s)]
            case Sampled(values):
                if not self.sampling:
                    return []
                self.appending += 1
                return [Append(BUFFER, [encode_sample(int(now * 1000), self.stream, values)], "sample")]
            case Persisted("sample", seqs):
                self.appending -= 1
                self.produced += len(seqs)
                self.last_seq = seqs[-1]
                return self.sender.pump(now) if self.uplink.up else []
            case PersistFailed("sample", error):
                self.appending -= 1
                return [Log("error", "sample not buffered", {"error": str(error)})]
            case Stop():
                self.sampling = False
                return []
        return []

    def _received(self, msg: object, now: float) -> list[Effect]:
        came_up = self.uplink.received(msg, now)  # type: ignore[arg-type]
        if came_up:
            self.sender.rewind()
            return [Log("info", "gateway session up", {"version": self.uplink.version}), *self.sender.pump(now)]
        match msg:
            case TelemetryAck(device_id, up_to) if device_id == self.device_id:
                return self.sender.acknowledged(up_to, now)
            case ErrorReply("hello-first", _):
                # the gateway restarted and forgot this session: introduce ourselves again
                return self.uplink.open(now)
            case ErrorReply(code, detail):
                return [Log("warning", "gateway refused a message", {"code": code, "detail": detail})]
        return []

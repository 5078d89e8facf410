"""The real tier cores, driven in virtual time over the in-memory network.

``SimNode`` is the virtual-time twin of ``common.runner.NodeRunner``: same
cores, same effects, but timers go to the ``VirtualClock``, frames cross the
``Network`` as real encoded bytes (so the codec runs on every message), and the
durable queues and the cloud store are in-memory twins.
"""

from __future__ import annotations

import random
from typing import Any

from common.effects import (
    UPSTREAM,
    AckQueue,
    Append,
    Effect,
    Event,
    LinkUp,
    Log,
    Malformed,
    Persisted,
    PersistFailed,
    Received,
    Reconnect,
    Sampled,
    Send,
    SetTimer,
    Stored,
    StoreIngest,
    StoreTouch,
    LoadCommands,
    StoreCommandStatus,
    InventoryTaken,
    TakeInventory,
    TakeSample,
    TimerFired,
)
from common.errors import ProtocolError, QueueError
from common.memory_queue import MemoryQueue
from common.protocol import ForwardRecord, decode, encode
from simulations.virtual import Network, VirtualClock

__all__ = ["MemoryStore", "SimNode"]

COMMIT_DELAY_S = 0.002  # a group commit's fsync, in virtual time


class MemoryStore:
    """The cloud store's in-memory twin: rows keyed by (device, stream, sequence), resends counted, not stored.

    As in the real store, sequence-0 records are reports (gaps, status, command
    results), never telemetry rows; ``gap`` records are kept as reported gaps.
    """

    def __init__(self) -> None:
        self.rows: list[ForwardRecord] = []
        self._keys: set[tuple[str, str, int]] = set()
        self.gaps: set[tuple[object, ...]] = set()
        self.duplicates = 0

    def ingest(self, records: list[ForwardRecord]) -> tuple[int, int]:
        stored = dups = 0
        for r in records:
            if r.kind == "gap":
                v = r.values
                self.gaps.add((v.get("reporter"), r.device_id, v.get("stream"), v.get("first"), v.get("last"), v.get("reason"), v.get("count")))
            if r.seq == 0:
                continue
            key = (r.device_id, r.stream, r.seq)
            if key in self._keys:
                self.duplicates += 1
                dups += 1
                continue
            self._keys.add(key)
            self.rows.append(r)
            stored += 1
        return stored, dups

    def distinct(self) -> int:
        return len({(r.device_id, r.stream, r.seq) for r in self.rows})


class SimNode:
    """One node: a core, its in-memory queues, its place on the network."""

    def __init__(
        self,
        name: str,
        core: Any,
        clock: VirtualClock,
        net: Network,
        *,
        upstream: str | None = None,
        queues: dict[str, MemoryQueue] | None = None,
        store: MemoryStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name, self.core, self.clock, self.net = name, core, clock, net
        self.upstream = upstream
        self.queues = queues or {}
        self.store = store
        self.rng = rng or random.Random(0)
        self.nodes: dict[str, SimNode] = {}  # filled by the fleet: every node by name
        self.timers: dict[str, int] = {}  # name -> generation, so a replaced timer never fires
        self.alive = True
        self.malformed = 0
        self.logs: list[Log] = []

    def feed(self, event: Event) -> None:
        if not self.alive:
            return
        for effect in self.core.handle(event, self.clock.now):
            self._do(effect)

    def _do(self, effect: Effect) -> None:
        match effect:
            case Send(peer, msg):
                dst = self.upstream if peer == UPSTREAM else peer
                if dst is None:
                    return
                frame = encode(msg)
                src_as_peer = self.name if peer == UPSTREAM else UPSTREAM
                self.net.send(self.name, dst, lambda: self.nodes[dst].deliver(src_as_peer, frame))
            case SetTimer(name, at):
                gen = self.timers.get(name, 0) + 1
                self.timers[name] = gen
                self.clock.call_at(at, lambda: self._timer(name, gen))
            case Append(queue, stream, payloads, token):
                self._append(queue, stream, payloads, token)
            case AckQueue(queue, stream, up_to):
                self.queues[queue].ack_sync(up_to, stream=stream)
            case Reconnect(delay):
                self.clock.call_later(delay, lambda: self.feed(LinkUp()))
            case TakeSample():
                self.feed(Sampled({"cpu_percent": round(self.rng.uniform(0, 100), 1), "battery_percent": round(self.rng.uniform(10, 100), 1)}))
            case TakeInventory():
                self.feed(InventoryTaken({"model": "sim-board-1", "firmware_version": "1.0.0", "os": "sim"}))
            case StoreIngest(token, _, _, records):
                assert self.store is not None
                stored, dups = self.store.ingest(records)
                self.clock.call_later(COMMIT_DELAY_S, lambda: self.feed(Stored(token, stored, dups)))
            case StoreTouch() | LoadCommands() | StoreCommandStatus():
                pass  # the telemetry scenario issues no commands
            case Log():
                self.logs.append(effect)

    def _append(self, queue: str, stream: str, payloads: list[bytes], token: Any) -> None:
        try:
            seqs = self.queues[queue].append_many_sync(payloads, stream=stream)
        except QueueError as exc:
            err = exc  # `exc` is unbound when the except block ends
            self.clock.call_later(COMMIT_DELAY_S, lambda: self.feed(PersistFailed(token, err)))
            return
        self.clock.call_later(COMMIT_DELAY_S, lambda: self.feed(Persisted(token, seqs)))

    def _timer(self, name: str, gen: int) -> None:
        if self.timers.get(name) == gen:
            self.feed(TimerFired(name))

    def deliver(self, peer: str, frame: bytes) -> None:
        try:
            msg = decode(frame)
        except ProtocolError as exc:
            self.malformed += 1
            self.feed(Malformed(peer, exc))
            return
        self.feed(Received(peer, msg))

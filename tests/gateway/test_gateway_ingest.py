"""The gateway takes a TelemetryBatch the same way whether it arrives as the message (in-process,
simulations) or as TelemetryEntries cut from the frame by ``decode_forwarding`` (the real socket)."""

import random

from common.effects import Append, Persisted, Received, Start
from common.memory_queue import MemoryQueue
from common.protocol import Hello, TelemetryBatch, TelemetryRecord, decode_record, encode
from common.protocol.codec import decode_forwarding
from common.streams import GATEWAY_POLICIES
from gateway.core import GatewayCore

PEER = "aa01"

# (base, seqs): in order, resent, reordered, after a gap, duplicates, empty, another device, an unknown stream
SCRIPT = [
    ("dev-1", "bulk", 0, [1, 2, 3]),
    ("dev-1", "bulk", 0, [4, 5, 6, 7]),
    ("dev-1", "bulk", 3, [2, 3, 4, 8, 9]),
    ("dev-1", "bulk", 7, [12, 10, 11]),
    ("dev-1", "bulk", 7, [14, 15]),
    ("dev-1", "bulk", 7, [13, 13, 14, 16, 15]),
    ("dev-1", "bulk", 7, []),
    ("dev-1", "critical", 0, [1]),
    ("dev-1", "state", 40, [41, 42]),
    ("dev-2", "bulk", 0, [1]),
    ("dev-1", "nope", 0, [1]),
]


def run(as_frames: bool) -> tuple[list, list, dict]:
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    core = GatewayCore("gw-1", "site-1", outbox, rng=random.Random(2), heartbeat_s=1.0, device_window=100)
    core.handle(Start(), 0.0)
    effects = core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), 0.0)
    for i, (device, stream, base, seqs) in enumerate(SCRIPT):
        records = [TelemetryRecord(s, 1000 + s, "metrics", {"v": float(s), "s": "ok"}) for s in seqs]
        batch = TelemetryBatch(device, stream, base, records)
        msg = decode_forwarding(encode(batch)) if as_frames else batch
        out = core.handle(Received(PEER, msg), 1.0 + i)
        effects += out
        for e in out:
            if isinstance(e, Append):
                effects += core.handle(Persisted(e.token, outbox.append_many_sync(e.payloads, stream=e.stream)), 1.5 + i)
    stored = [(s, [decode_record(p) for _, p in outbox.read(0, 1000, stream=s)]) for s in ("critical", "state", "bulk")]
    return effects, stored, dict(core.counters)


def test_frames_and_messages_give_the_same_effects_outbox_and_counters():
    effects, stored, counters = run(as_frames=False)
    assert run(as_frames=True) == (effects, stored, counters)
    bulk = dict(stored)["bulk"]
    assert [r.seq for r in bulk] == list(range(1, 17))
    assert counters["resent_records"] > 0 and counters["out_of_order"] > 0


def test_a_batch_before_hello_is_named_as_the_wire_message_either_way():
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    core = GatewayCore("gw-1", "site-1", outbox, rng=random.Random(2), heartbeat_s=1.0)
    core.handle(Start(), 0.0)
    batch = TelemetryBatch("dev-1", "bulk", 0, [TelemetryRecord(1, 1, "metrics", {})])
    replies = [core.handle(Received(PEER, m), 1.0)[0].msg for m in (batch, decode_forwarding(encode(batch)))]
    assert replies[0] == replies[1] and replies[0].detail == "send Hello before TelemetryBatch"

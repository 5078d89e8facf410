"""The gateway core, fed events by hand on a fake clock (no I/O)."""

import random

from common.effects import UPSTREAM, AckQueue, Append, Malformed, Persisted, PersistFailed, Received, Send
from common.errors import ProtocolError, QueueFullError
from common.memory_queue import MemoryQueue
from common.protocol import (
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    Heartbeat,
    Hello,
    HelloAck,
    TelemetryAck,
    TelemetryBatch,
    TelemetryRecord,
    decode_record,
)
from gateway.core import OUTBOX, GatewayCore

PEER = "aa01"


def make():
    outbox = MemoryQueue("outbox", max_bytes=1 << 20).start()
    return GatewayCore("gw-1", "site-1", outbox, rng=random.Random(2), heartbeat_s=1.0), outbox


def recs(*seqs):
    return [TelemetryRecord(s, 1000 + s, "metrics", {"cpu_percent": float(s)}) for s in seqs]


def hello(core, now=0.0):
    return core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), now)


def persist(core, outbox, effects, now):
    (append,) = [e for e in effects if isinstance(e, Append)]
    seqs = outbox.append_many_sync(append.payloads)
    return core.handle(Persisted(append.token, seqs), now)


def test_telemetry_before_hello_is_refused():
    core, _ = make()
    (reply,) = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1))), 0.0)
    assert reply == Send(PEER, ErrorReply("hello-first", "send Hello before TelemetryBatch"))


def test_hello_is_acknowledged_with_negotiated_version():
    core, _ = make()
    assert hello(core) == [Send(PEER, HelloAck("gw-1", 1, 1000))]


def test_unsupported_version_gets_an_error_not_a_session():
    core, _ = make()
    (reply,) = core.handle(Received(PEER, Hello("dev-1", "device", "s", 7, 9)), 0.0)
    assert reply.msg.code == "version" and PEER not in core.sessions


def test_batch_is_acknowledged_only_after_the_outbox_commit():
    core, outbox = make()
    hello(core)
    effects = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1, 2, 3))), 0.1)
    assert not [e for e in effects if isinstance(e, Send)]  # no ack before durable
    acks = [e.msg for e in persist(core, outbox, effects, 0.2) if isinstance(e, Send)]
    assert acks == [TelemetryAck("dev-1", 3)]
    assert [decode_record(p).seq for _, p in outbox.read()] == [1, 2, 3]


def test_resent_records_are_not_appended_twice_and_are_acked_at_once():
    core, outbox = make()
    hello(core)
    persist(core, outbox, core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1, 2))), 0.1), 0.2)
    effects = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1, 2))), 0.3)
    assert effects == [Send(PEER, TelemetryAck("dev-1", 2))]
    effects = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(2, 3))), 0.4)
    (append,) = [e for e in effects if isinstance(e, Append)]
    assert [decode_record(p).seq for p in append.payloads] == [3]


def test_full_outbox_answers_backpressure_and_accepts_the_resend_later():
    core, outbox = make()
    hello(core)
    effects = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1))), 0.1)
    (append,) = [e for e in effects if isinstance(e, Append)]
    (reply,) = core.handle(PersistFailed(append.token, QueueFullError("outbox", 10, 10, 5)), 0.2)
    assert reply.msg.code == "backpressure"
    again = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1))), 0.3)
    assert [e for e in again if isinstance(e, Append)]


def test_batch_for_another_device_on_this_session_is_refused():
    core, _ = make()
    hello(core)
    (reply,) = core.handle(Received(PEER, TelemetryBatch("dev-2", 0, recs(1))), 0.1)
    assert reply.msg.code == "wrong-device"


def test_malformed_frame_gets_an_error_reply_and_the_session_survives():
    core, outbox = make()
    hello(core)
    (reply,) = core.handle(Malformed(PEER, ProtocolError("frame: not valid msgpack")), 0.1)
    assert reply == Send(PEER, ErrorReply("malformed", "frame: not valid msgpack"))
    assert [e for e in core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1))), 0.2) if isinstance(e, Append)]


def test_heartbeat_is_echoed():
    core, _ = make()
    hello(core)
    assert core.handle(Received(PEER, Heartbeat(5)), 2.0) == [Send(PEER, Heartbeat(2000))]


def test_outbox_is_forwarded_and_dropped_only_on_cloud_ack():
    core, outbox = make()
    core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), 0.0)
    persist(core, outbox, core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1, 2))), 0.1), 0.2)
    effects = core.handle(Received(UPSTREAM, HelloAck("cloud", 1, 1000)), 0.3)
    (fwd,) = [e.msg for e in effects if isinstance(e, Send) and e.peer == UPSTREAM]
    assert isinstance(fwd, ForwardBatch) and (fwd.base, fwd.first, fwd.last) == (0, 1, 2)
    assert len(outbox) == 2
    effects = core.handle(Received(UPSTREAM, ForwardAck(2, 2, 0)), 0.4)
    assert AckQueue(OUTBOX, 2) in effects


def test_devices_silent_for_three_intervals_lose_their_session():
    core, _ = make()
    hello(core, 0.0)
    core.handle(Received(UPSTREAM, HelloAck("cloud", 1, 1000)), 0.0)
    core.handle(__import__("common.effects", fromlist=["TimerFired"]).TimerFired("heartbeat"), 3.5)
    assert PEER not in core.sessions


def test_records_after_a_gap_are_not_taken_so_the_ack_never_covers_a_missing_one():
    core, outbox = make()
    hello(core)
    effects = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(4, 5, 6))), 0.1)  # 1..3 lost or late
    assert effects == [] and core.counters["out_of_order"] == 1
    effects = core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1, 2, 3))), 0.2)
    assert [e.msg for e in persist(core, outbox, effects, 0.3) if isinstance(e, Send)] == [TelemetryAck("dev-1", 3)]


def test_base_carries_the_watermark_across_a_gateway_restart():
    core, outbox = make()  # a fresh gateway: it has never seen dev-1, whose records up to 40 were acknowledged before
    hello(core)
    effects = core.handle(Received(PEER, TelemetryBatch("dev-1", 40, recs(41, 42))), 0.1)
    assert [e.msg for e in persist(core, outbox, effects, 0.2) if isinstance(e, Send)] == [TelemetryAck("dev-1", 42)]


def test_an_append_after_a_failed_one_does_not_advance_the_ack():
    core, outbox = make()
    hello(core)
    (a1,) = [e for e in core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(1, 2))), 0.1) if isinstance(e, Append)]
    (a2,) = [e for e in core.handle(Received(PEER, TelemetryBatch("dev-1", 0, recs(3, 4))), 0.1) if isinstance(e, Append)]
    core.handle(PersistFailed(a1.token, QueueFullError("outbox", 10, 10, 5)), 0.2)
    effects = core.handle(Persisted(a2.token, outbox.append_many_sync(a2.payloads)), 0.3)
    assert TelemetryAck("dev-1", 4) not in [e.msg for e in effects if isinstance(e, Send)]
    assert core.accepted.get("dev-1", 0) == 0

"""The gateway core, fed events by hand on a fake clock (no I/O)."""

import random
from datetime import UTC, datetime

from common.effects import (
    UPSTREAM,
    AckQueue,
    Append,
    Malformed,
    Persisted,
    PersistFailed,
    Received,
    Send,
    SetTimer,
    Start,
    TimerFired,
)
from common.errors import ProtocolError, QueueFullError
from common.memory_queue import MemoryQueue
from common.protocol import (
    Command,
    CommandAck,
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    Heartbeat,
    Hello,
    HelloAck,
    TelemetryAck,
    TelemetryBatch,
    TelemetryRecord,
    decode,
    decode_record,
    encode_record,
    unpack_entries,
)
from common.shaping import LinkWindows, TokenBucket
from common.streams import GATEWAY_POLICIES, StreamPolicy
from gateway.core import COMMANDS, OUTBOX, GatewayCore, gap_reports

PEER = "aa01"


def make(policies=GATEWAY_POLICIES, **kw):
    outbox = MemoryQueue("outbox", streams=policies).start()
    commands = MemoryQueue("commands").start()
    core = GatewayCore("gw-1", "site-1", outbox, commands=commands, rng=random.Random(2), heartbeat_s=1.0, device_window=100, **kw)
    core.handle(Start(), 0.0)
    return core, outbox


def recs(*seqs):
    return [TelemetryRecord(s, 1000 + s, "metrics", {"cpu_percent": float(s)}) for s in seqs]


def batch(*seqs, stream="bulk", base=0, device="dev-1"):
    return Received(PEER, TelemetryBatch(device, stream, base, recs(*seqs)))


def hello(core, now=0.0):
    return core.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), now)


def cloud_up(core, now=0.0):
    return core.handle(Received(UPSTREAM, HelloAck("cloud", 1, 1000, 8000)), now)


def persist(core, outbox, effects, now):
    (append,) = [e for e in effects if isinstance(e, Append)]
    seqs = outbox.append_many_sync(append.payloads, stream=append.stream)
    return core.handle(Persisted(append.token, seqs), now)


def msgs(effects, peer=None):
    return [e.msg for e in effects if isinstance(e, Send) and (peer is None or e.peer == peer)]


def test_telemetry_before_hello_is_refused():
    core, _ = make()
    (reply,) = core.handle(batch(1), 0.0)
    assert reply == Send(PEER, ErrorReply("hello-first", "send Hello before TelemetryBatch"))


def test_hello_is_acknowledged_with_version_and_window():
    core, _ = make()
    assert hello(core) == [Send(PEER, HelloAck("gw-1", 1, 1000, 100))]


def test_unsupported_version_gets_an_error_not_a_session():
    core, _ = make()
    (reply,) = core.handle(Received(PEER, Hello("dev-1", "device", "s", 7, 9)), 0.0)
    assert reply.msg.code == "version" and PEER not in core.sessions


def test_unknown_stream_is_refused():
    core, _ = make()
    hello(core)
    (reply,) = core.handle(batch(1, stream="gossip"), 0.1)
    assert reply.msg.code == "bad-stream"


def test_batch_is_acknowledged_only_after_the_outbox_commit():
    core, outbox = make()
    hello(core)
    effects = core.handle(batch(1, 2, 3), 0.1)
    assert not msgs(effects)  # no ack before durable
    assert msgs(persist(core, outbox, effects, 0.2), PEER) == [TelemetryAck("dev-1", "bulk", 3, 100)]
    assert [decode_record(p).seq for _, p in outbox.read(stream="bulk")] == [1, 2, 3]


def test_streams_are_acknowledged_separately():
    core, outbox = make()
    hello(core)
    persist(core, outbox, core.handle(batch(1, 2), 0.1), 0.2)
    acks = msgs(persist(core, outbox, core.handle(batch(1, stream="critical"), 0.3), 0.4), PEER)
    assert acks == [TelemetryAck("dev-1", "critical", 1, 100)]


def test_resent_records_are_not_appended_twice_and_are_acked_at_once():
    core, outbox = make()
    hello(core)
    persist(core, outbox, core.handle(batch(1, 2), 0.1), 0.2)
    assert core.handle(batch(1, 2), 0.3) == [Send(PEER, TelemetryAck("dev-1", "bulk", 2, 100))]
    (append,) = [e for e in core.handle(batch(2, 3), 0.4) if isinstance(e, Append)]
    assert [decode_record(p).seq for p in append.payloads] == [3]


def test_records_after_a_gap_are_not_taken_so_the_ack_never_covers_a_missing_one():
    core, outbox = make()
    hello(core)
    assert core.handle(batch(4, 5, 6), 0.1) == [] and core.counters["out_of_order"] == 1
    assert msgs(persist(core, outbox, core.handle(batch(1, 2, 3), 0.2), 0.3), PEER) == [TelemetryAck("dev-1", "bulk", 3, 100)]


def test_base_carries_the_watermark_across_a_gateway_restart():
    core, outbox = make()
    hello(core)
    effects = core.handle(batch(41, 42, base=40), 0.1)
    assert msgs(persist(core, outbox, effects, 0.2), PEER) == [TelemetryAck("dev-1", "bulk", 42, 100)]


def test_an_append_after_a_failed_one_does_not_advance_the_ack():
    core, outbox = make()
    hello(core)
    (a1,) = [e for e in core.handle(batch(1, 2), 0.1) if isinstance(e, Append)]
    (a2,) = [e for e in core.handle(batch(3, 4), 0.1) if isinstance(e, Append)]
    core.handle(PersistFailed(a1.token, QueueFullError("outbox", 10, 10, 5)), 0.2)
    effects = core.handle(Persisted(a2.token, outbox.append_many_sync(a2.payloads, stream="bulk")), 0.3)
    assert not [m for m in msgs(effects) if isinstance(m, TelemetryAck) and m.up_to == 4]
    assert core.accepted.get(("dev-1", "bulk"), 0) == 0


def test_full_critical_stream_grants_no_credit_and_credit_returns_on_heartbeat():
    core, outbox = make({**GATEWAY_POLICIES, "critical": StreamPolicy(max_bytes=260)})
    hello(core)
    cloud_up(core)
    acks = msgs(persist(core, outbox, core.handle(batch(1, 2, 3, 4, 5, stream="critical"), 0.1), 0.2), PEER)
    assert acks == [TelemetryAck("dev-1", "critical", 5, 0)]  # keep the rest in your buffer
    effects = core.handle(Received(PEER, Heartbeat(0)), 0.5)
    assert not [m for m in msgs(effects) if isinstance(m, TelemetryAck)]
    core.handle(Received(UPSTREAM, ForwardAck("critical", 5, 5, 0)), 0.6)
    outbox.ack_sync(5, stream="critical")
    effects = core.handle(Received(PEER, Heartbeat(0)), 0.7)
    assert TelemetryAck("dev-1", "critical", 5, 100) in msgs(effects)


def test_malformed_frame_gets_an_error_reply_and_the_session_survives():
    core, _ = make()
    hello(core)
    (reply,) = core.handle(Malformed(PEER, ProtocolError("frame: not valid msgpack")), 0.1)
    assert reply == Send(PEER, ErrorReply("malformed", "frame: not valid msgpack"))
    assert [e for e in core.handle(batch(1), 0.2) if isinstance(e, Append)]


def test_outbox_is_forwarded_critical_first_and_dropped_only_on_cloud_ack():
    core, outbox = make()
    hello(core)
    persist(core, outbox, core.handle(batch(1, 2), 0.1), 0.2)
    persist(core, outbox, core.handle(batch(1, stream="critical"), 0.2), 0.2)
    fwd = [m for m in msgs(cloud_up(core, 0.3), UPSTREAM) if isinstance(m, ForwardBatch)]
    assert [(f.stream, f.base, f.first, f.last) for f in fwd] == [("critical", 0, 1, 1), ("bulk", 0, 1, 2)]
    assert [decode_record(e).seq for e in unpack_entries(fwd[1].blob)] == [1, 2]
    assert AckQueue(OUTBOX, "bulk", 2) in core.handle(Received(UPSTREAM, ForwardAck("bulk", 2, 2, 0)), 0.4)


def test_byte_rate_cap_holds_batches_back_and_schedules_the_next_drain():
    core, outbox = make(bucket=TokenBucket(100, 100), batch_max=1)
    hello(core)
    for s in range(1, 4):
        persist(core, outbox, core.handle(batch(s), 0.1 * s), 0.1 * s)
    effects = cloud_up(core, 1.0)
    assert len([m for m in msgs(effects, UPSTREAM) if isinstance(m, ForwardBatch)]) == 1
    (timer,) = [e for e in effects if isinstance(e, SetTimer) and e.name == "drain"]
    assert timer.at > 1.0


def test_link_window_holds_bulk_but_never_critical():
    windows = LinkWindows([("0 2 * * *", 3600)], "UTC")  # 02:00-03:00 UTC
    core, outbox = make(link_windows=windows)
    hello(core)
    noon = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()
    persist(core, outbox, core.handle(batch(1), noon), noon)
    persist(core, outbox, core.handle(batch(1, stream="critical"), noon), noon)
    effects = cloud_up(core, noon)
    assert [m.stream for m in msgs(effects, UPSTREAM) if isinstance(m, ForwardBatch)] == ["critical"]
    (timer,) = [e for e in effects if isinstance(e, SetTimer) and e.name == "drain"]
    assert timer.at == datetime(2026, 11, 28, 2, 0, tzinfo=UTC).timestamp()
    assert [m.stream for m in msgs(core.handle(TimerFired("drain"), timer.at), UPSTREAM) if isinstance(m, ForwardBatch)] == ["bulk"]


def test_command_for_an_offline_device_is_held_then_delivered_and_reported():
    core, outbox = make()
    cloud_up(core)
    cmd = Command("dev-1", 7, "ping", {}, 10_000_000)
    (append,) = core.handle(Received(UPSTREAM, cmd), 1.0)
    assert append.queue == COMMANDS
    seqs = core.commands_queue.append_many_sync(append.payloads)
    effects = core.handle(Persisted(append.token, seqs), 1.1)
    assert msgs(effects) == [CommandAck("dev-1", 7, "held", "")]  # the device is offline: nothing else
    assert Send(PEER, cmd) in hello(core, 2.0)
    effects = core.handle(Received(PEER, CommandAck("dev-1", 7, "done", "pong")), 2.1)
    (report,) = [e for e in effects if isinstance(e, Append)]
    rec = decode_record(report.payloads[0])
    assert (report.stream, rec.kind, rec.seq, rec.values["status"]) == ("critical", "command", 0, "done")
    assert AckQueue(COMMANDS, "default", 1) in effects


def test_held_command_expires_and_is_reported_expired():
    core, outbox = make()
    cmd = Command("dev-1", 1, "ping", {}, 5_000)
    (append,) = core.handle(Received(UPSTREAM, cmd), 1.0)
    core.handle(Persisted(append.token, core.commands_queue.append_many_sync(append.payloads)), 1.0)
    effects = core.handle(TimerFired("heartbeat"), 6.0)
    (report,) = [e for e in effects if isinstance(e, Append)]
    assert decode_record(report.payloads[0]).values["status"] == "expired"
    assert hello(core, 6.1) == [Send(PEER, HelloAck("gw-1", 1, 1000, 100))]  # nothing left to deliver


def test_held_commands_survive_a_restart():
    core, _ = make()
    cmd = Command("dev-1", 3, "ping", {}, 10**12)
    (append,) = core.handle(Received(UPSTREAM, cmd), 1.0)
    core.handle(Persisted(append.token, core.commands_queue.append_many_sync(append.payloads)), 1.0)
    fresh = GatewayCore("gw-1", "site-1", MemoryQueue(streams=GATEWAY_POLICIES).start(), commands=core.commands_queue, rng=random.Random(3))
    fresh.handle(Start(), 2.0)
    effects = fresh.handle(Received(PEER, Hello("dev-1", "device", "site-1", 1, 1)), 2.1)
    assert Send(PEER, cmd) in effects


def test_gap_reports_cover_each_device_and_contiguous_range():
    hook = gap_reports("gw-1", lambda: 5)
    dropped = [(i, encode_record(ForwardRecord(d, "bulk", s, 0, "metrics", {}))) for i, (d, s) in enumerate(
        [("a", 1), ("a", 2), ("b", 7), ("a", 4), ("b", 8)], 1)]
    reports = [decode_record(p) for _, p in hook("bulk", "evicted", dropped)]
    assert sorted((r.device_id, r.values["first"], r.values["last"], r.values["count"]) for r in reports) == [
        ("a", 1, 2, 2), ("a", 4, 4, 1), ("b", 7, 8, 2)]
    assert {(r.seq, r.kind, r.values["reason"], r.values["reporter"]) for r in reports} == {(0, "gap", "evicted", "gw-1")}


def test_devices_silent_for_three_intervals_lose_their_session():
    core, _ = make()
    hello(core, 0.0)
    cloud_up(core)
    core.handle(TimerFired("heartbeat"), 3.5)
    assert PEER not in core.sessions


def test_status_reports_backlog_quota_age_and_drops():
    core, outbox = make()
    hello(core)
    persist(core, outbox, core.handle(batch(1, 2), 0.1), 0.2)
    status = core.status(1.0)
    assert status["backlog.bulk.records"] == 2 and status["quota.bulk.bytes"] == GATEWAY_POLICIES["bulk"].max_bytes
    assert status["link"] == "down" and status["evicted.bulk"] == 0 and "oldest_age_s.bulk" in status
    assert decode  # the module's codec is what the driver uses to read held commands

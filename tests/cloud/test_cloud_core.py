"""The cloud core, fed events by hand (no I/O)."""

from cloud.core import CloudCore
from common.effects import CommandsReady, LoadCommands, Received, Send, StoreCommandStatus, Stored, StoreIngest
from common.protocol import (
    Command,
    CommandAck,
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    GatewayStatus,
    Hello,
    HelloAck,
    encode_record,
    pack_entries,
)

GW = "bb02"


def blob(*seqs, device="dev-1", stream="bulk"):
    return pack_entries([encode_record(ForwardRecord(device, stream, s, s, "metrics", {"v": 1.0})) for s in seqs])


def session():
    core = CloudCore(heartbeat_s=1.0, window=500)
    effects = core.handle(Received(GW, Hello("gw-1", "gateway", "site-1", 1, 1)), 0.0)
    assert Send(GW, HelloAck("cloud", 1, 1000, 500)) in effects and LoadCommands("gw-1") in effects
    return core


def ingest(core, base, first, last, data, stream="bulk", now=1.0):
    msg = ForwardBatch("gw-1", "site-1", stream, base, first, last, data)
    (eff,) = [e for e in core.handle(Received(GW, msg), now) if isinstance(e, StoreIngest)]
    return eff


def test_batch_is_acknowledged_only_after_the_store_commits():
    core = session()
    eff = ingest(core, 0, 1, 3, blob(1, 2, 3))
    assert [r.seq for r in eff.records] == [1, 2, 3] and eff.site == "site-1"
    assert core.handle(Stored(eff.token, 3, 0), 1.1) == [Send(GW, ForwardAck("bulk", 3, 3, 0))]


def test_watermarks_are_per_stream_and_wait_for_a_lost_batch():
    core = session()
    late = ingest(core, 0, 4, 6, blob(4, 5, 6))  # batch 1..3 was lost on the way
    assert core.handle(Stored(late.token, 3, 0), 1.1) == [Send(GW, ForwardAck("bulk", 0, 3, 0))]
    crit = ingest(core, 0, 1, 1, blob(1, stream="critical"), stream="critical")
    assert core.handle(Stored(crit.token, 1, 0), 1.15) == [Send(GW, ForwardAck("critical", 1, 1, 0))]
    first = ingest(core, 0, 1, 3, blob(1, 2, 3))  # the lost batch, resent alone: the watermark jumps over 4..6
    assert core.handle(Stored(first.token, 3, 0), 1.2) == [Send(GW, ForwardAck("bulk", 6, 3, 0))]


def test_ranges_stored_past_gaps_are_joined_as_the_gaps_fill_and_bounded():
    from cloud.core import MAX_AHEAD

    core = session()
    for first in (11, 21, 31):  # 1..10 and 41..50 lost; 11..40 stored past the gap
        eff = ingest(core, 0, first, first + 9, blob(*range(first, first + 10)))
        assert core.handle(Stored(eff.token, 10, 0), 1.1) == [Send(GW, ForwardAck("bulk", 0, 10, 0))]
    eff = ingest(core, 0, 1, 10, blob(*range(1, 11)))
    assert core.handle(Stored(eff.token, 10, 0), 1.2) == [Send(GW, ForwardAck("bulk", 40, 10, 0))]
    for i in range(MAX_AHEAD + 5):  # past the bound the highest ranges are forgotten (resent after the timeout)
        eff = ingest(core, 40, 100 + 10 * i, 100 + 10 * i, blob(1))
        core.handle(Stored(eff.token, 1, 0), 1.3)
    (session_,) = core.sessions.values()
    assert len(session_.ahead["bulk"]) == MAX_AHEAD


def test_base_restores_the_watermark_after_a_cloud_restart():
    core = session()
    eff = ingest(core, 100, 101, 102, blob(1, 2))
    assert core.handle(Stored(eff.token, 2, 0), 1.1) == [Send(GW, ForwardAck("bulk", 102, 2, 0))]


def test_corrupt_entry_is_rejected_and_counted_not_looped_on():
    core = session()
    good = encode_record(ForwardRecord("dev-1", "bulk", 1, 1, "metrics", {}))
    eff = ingest(core, 0, 1, 2, pack_entries([good, b"\xc1garbage"]))
    assert [r.seq for r in eff.records] == [1] and core.counters["rejected"] == 1


def test_blob_that_is_not_zstd_is_an_error_reply():
    core = session()
    (reply,) = core.handle(Received(GW, ForwardBatch("gw-1", "site-1", "bulk", 0, 1, 1, b"nope")), 1.0)
    assert reply.msg.code == "malformed"


def test_batch_without_hello_and_from_a_device_role_are_refused():
    core = CloudCore()
    (reply,) = core.handle(Received(GW, ForwardBatch("gw-1", "s", "bulk", 0, 1, 1, blob(1))), 0.0)
    assert reply.msg.code == "hello-first"
    (reply,) = core.handle(Received(GW, Hello("dev-1", "device", "s", 1, 1)), 0.0)
    assert reply == Send(GW, ErrorReply("role", "'dev-1' said role 'device'; the cloud serves gateways"))


def test_batch_claiming_another_gateway_or_stream_is_refused():
    core = session()
    (reply,) = core.handle(Received(GW, ForwardBatch("gw-9", "s", "bulk", 0, 1, 1, blob(1))), 1.0)
    assert reply.msg.code == "bad-batch"
    (reply,) = core.handle(Received(GW, ForwardBatch("gw-1", "s", "gossip", 0, 1, 1, blob(1))), 1.0)
    assert reply.msg.code == "bad-batch"


def test_gateway_status_is_stored_as_a_report():
    core = session()
    (eff,) = core.handle(Received(GW, GatewayStatus("gw-1", 5000, {"link": "up", "backlog.bulk.records": 3})), 1.0)
    (rec,) = eff.records
    assert (rec.device_id, rec.seq, rec.kind, rec.values["backlog.bulk.records"]) == ("gw-1", 0, "gateway.status", 3)


def test_commands_go_to_the_gateway_that_serves_the_device_and_held_is_recorded():
    core = session()
    cmd = Command("dev-1", 1, "ping", {}, 99)
    assert core.handle(CommandsReady([("gw-1", cmd), ("gw-offline", cmd)]), 1.0) == [Send(GW, cmd)]
    assert core.handle(Received(GW, CommandAck("dev-1", 1, "held", "")), 1.1) == [
        StoreCommandStatus("dev-1", 1, "held", "held by gw-1")]

"""The cloud core, fed events by hand (no I/O)."""

from common.effects import Received, Send, Stored, StoreIngest
from common.protocol import ErrorReply, ForwardAck, ForwardBatch, ForwardRecord, Hello, HelloAck, encode_record
from cloud.core import CloudCore

GW = "bb02"


def entries(*seqs, device="dev-1"):
    return [encode_record(ForwardRecord(device, s, s, "metrics", {"v": 1.0})) for s in seqs]


def session():
    core = CloudCore(heartbeat_s=1.0)
    effects = core.handle(Received(GW, Hello("gw-1", "gateway", "site-1", 1, 1)), 0.0)
    assert Send(GW, HelloAck("cloud", 1, 1000)) in effects
    return core


def ingest(core, base, first, last, raw, now=1.0):
    (eff,) = [e for e in core.handle(Received(GW, ForwardBatch("gw-1", "site-1", base, first, last, raw)), now) if isinstance(e, StoreIngest)]
    return eff


def test_batch_is_acknowledged_only_after_the_store_commits():
    core = session()
    eff = ingest(core, 0, 1, 3, entries(1, 2, 3))
    assert [r.seq for r in eff.records] == [1, 2, 3] and eff.site == "site-1"
    assert core.handle(Stored(eff.token, 3, 0), 1.1) == [Send(GW, ForwardAck(3, 3, 0))]


def test_watermark_waits_for_a_lost_batch():
    core = session()
    late = ingest(core, 0, 4, 6, entries(4, 5, 6))  # batch 1..3 was lost on the way
    assert core.handle(Stored(late.token, 3, 0), 1.1) == [Send(GW, ForwardAck(0, 3, 0))]
    first = ingest(core, 0, 1, 3, entries(1, 2, 3))
    assert core.handle(Stored(first.token, 3, 0), 1.2) == [Send(GW, ForwardAck(3, 3, 0))]


def test_base_restores_the_watermark_after_a_cloud_restart():
    core = session()  # a new cloud incarnation: it has never seen this gateway
    eff = ingest(core, 100, 101, 102, entries(1, 2))
    assert core.handle(Stored(eff.token, 2, 0), 1.1) == [Send(GW, ForwardAck(102, 2, 0))]


def test_corrupt_entry_is_rejected_and_counted_not_looped_on():
    core = session()
    eff = ingest(core, 0, 1, 2, [entries(1)[0], b"\xc1garbage"])
    assert [r.seq for r in eff.records] == [1]
    assert core.counters["rejected"] == 1


def test_batch_without_hello_and_from_a_device_role_are_refused():
    core = CloudCore()
    (reply,) = core.handle(Received(GW, ForwardBatch("gw-1", "s", 0, 1, 1, entries(1))), 0.0)
    assert reply.msg.code == "hello-first"
    (reply,) = core.handle(Received(GW, Hello("dev-1", "device", "s", 1, 1)), 0.0)
    assert reply == Send(GW, ErrorReply("role", "'dev-1' said role 'device'; the cloud serves gateways"))


def test_batch_claiming_another_gateway_is_refused():
    core = session()
    (reply,) = core.handle(Received(GW, ForwardBatch("gw-9", "s", 0, 1, 1, entries(1))), 1.0)
    assert reply.msg.code == "bad-batch"

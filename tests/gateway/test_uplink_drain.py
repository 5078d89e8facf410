"""gateway.uplink_drain.UplinkDrain on its own: the cloud session and the outbox drained over it."""

import random
from datetime import UTC, datetime

from common.effects import UPSTREAM, AckQueue, Reconnect, Send, SetTimer
from common.memory_queue import MemoryQueue
from common.protocol import ForwardBatch, ForwardRecord, Heartbeat, Hello, HelloAck, encode_record, unpack_entries
from common.shaping import LinkWindows, TokenBucket
from common.streams import GATEWAY_POLICIES
from gateway.reports import OUTBOX
from gateway.uplink_drain import UplinkDrain


def make(**kw) -> tuple[UplinkDrain, MemoryQueue]:
    outbox = MemoryQueue("outbox", streams=GATEWAY_POLICIES).start()
    return UplinkDrain("gw-1", "site-1", outbox, rng=random.Random(1), heartbeat_s=1.0, **kw), outbox


def fill(outbox: MemoryQueue, stream: str, n: int) -> None:
    outbox.append_many_sync([encode_record(ForwardRecord("dev-1", stream, s, s, "metrics", {"v": 1.0}))
                             for s in range(1, n + 1)], stream=stream)


def batches(effects) -> list[ForwardBatch]:
    return [e.msg for e in effects if isinstance(e, Send) and isinstance(e.msg, ForwardBatch)]


def up(drain: UplinkDrain, now: float = 0.0) -> list:
    drain.open(now)
    assert drain.session(HelloAck("cloud", 1, 1000, 8000), now) and drain.up
    return drain.drain(now)


def test_hello_until_answered_and_nothing_sent_while_down():
    drain, outbox = make()
    fill(outbox, "bulk", 3)
    assert drain.open(0.0) == [Send(UPSTREAM, Hello("gw-1", "gateway", "site-1", 1, 1)), SetTimer("hello", 0.05)]
    assert drain.drain(0.1) == [] and not drain.up
    assert drain.retry_hello(0.05)[1] == SetTimer("hello", 0.05 + 0.1)


def test_critical_goes_first_and_entries_leave_only_on_the_clouds_ack():
    drain, outbox = make()
    fill(outbox, "bulk", 2)
    fill(outbox, "critical", 1)
    sent = batches(up(drain))
    assert [(b.stream, b.base, b.first, b.last) for b in sent] == [("critical", 0, 1, 1), ("bulk", 0, 1, 2)]
    assert len(unpack_entries(sent[1].blob)) == 2 and drain.counters["uplink_bytes"] > 0
    assert drain.acknowledged("bulk", 2, 0.5) == [AckQueue(OUTBOX, "bulk", 2)]
    assert drain.acknowledged("gossip", 2, 0.5) == []


def test_a_session_coming_back_sends_everything_unacknowledged_again():
    drain, outbox = make()
    fill(outbox, "state", 2)
    assert len(batches(up(drain))) == 1
    assert not drain.session(Heartbeat(0), 1.0)  # liveness only
    ticked = drain.tick(5.0)  # three heartbeats of silence: the session is dead
    assert any(isinstance(e, Reconnect) for e in ticked) and not drain.up
    assert [b.first for b in batches(up(drain, 6.0))] == [1]


def test_no_ack_for_the_timeout_resends_from_the_last_ack():
    drain, outbox = make(ack_timeout_s=2.0)
    fill(outbox, "bulk", 2)
    up(drain)
    drain.session(Heartbeat(0), 2.5)
    assert [b.first for b in batches(drain.tick(2.5))] == [1]


def test_the_byte_cap_holds_batches_back_and_sets_the_drain_timer():
    drain, outbox = make(bucket=TokenBucket(100, 100), batch_max=1)
    fill(outbox, "bulk", 3)
    effects = up(drain, 1.0)
    assert len(batches(effects)) == 1
    (timer,) = [e for e in effects if isinstance(e, SetTimer) and e.name == "drain"]
    assert timer.at > 1.0


def test_a_closed_link_window_holds_bulk_but_not_critical():
    drain, outbox = make(link_windows=LinkWindows([("0 2 * * *", 3600)], "UTC"))
    fill(outbox, "bulk", 1)
    fill(outbox, "critical", 1)
    noon = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()
    effects = up(drain, noon)
    assert [b.stream for b in batches(effects)] == ["critical"]
    assert SetTimer("drain", datetime(2026, 11, 28, 2, 0, tzinfo=UTC).timestamp()) in effects


def test_three_repeats_of_one_ack_resend_the_lost_batch_alone_at_once():
    drain, outbox = make(batch_max=10)
    fill(outbox, "bulk", 60)
    sent = batches(up(drain))
    assert [(b.first, b.last) for b in sent] == [(1, 10), (11, 20), (21, 30), (31, 40), (41, 50), (51, 60)]
    # 1..10 was lost: the cloud stores each later batch and repeats its acknowledgement (0) for each
    assert drain.acknowledged("bulk", 0, 0.1) == [] and drain.acknowledged("bulk", 0, 0.2) == []
    again = batches(drain.acknowledged("bulk", 0, 0.3))
    assert [(b.first, b.last) for b in again] == [(1, 10)]  # alone, not 1..60 after an ack timeout
    assert batches(drain.acknowledged("bulk", 0, 0.4)) == []  # once per acknowledgement value
    # the cloud's watermark jumps over what it stored past the gap
    assert drain.acknowledged("bulk", 60, 0.5)[0] == AckQueue(OUTBOX, "bulk", 60)
    assert drain.senders["bulk"].fast_resends == 1 and drain.senders["bulk"].resends == 0

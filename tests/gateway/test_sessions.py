"""gateway.sessions.DeviceSessions on its own: sessions, the contiguous run accepted, acks only once durable, credit."""

from common.effects import Append, Log, Send
from common.memory_queue import MemoryQueue
from common.protocol import Heartbeat, Hello, HelloAck, TelemetryAck, TelemetryBatch, TelemetryRecord
from common.protocol.codec import TelemetryEntries
from common.streams import GATEWAY_POLICIES, StreamPolicy
from gateway.sessions import DeviceSessions

PEER = "aa01"


def make(policies=GATEWAY_POLICIES) -> tuple[DeviceSessions, MemoryQueue]:
    outbox = MemoryQueue("outbox", streams=policies).start()
    return DeviceSessions("gw-1", outbox, heartbeat_s=1.0, device_window=100), outbox


def entries(*seqs: int, stream: str = "bulk", base: int = 0, device: str = "dev-1") -> TelemetryEntries:
    recs = [TelemetryRecord(s, 1000 + s, "metrics", {"v": float(s)}) for s in seqs]
    return TelemetryEntries.of(TelemetryBatch(device, stream, base, recs))


def opened(s: DeviceSessions, peer: str = PEER, device: str = "dev-1", now: float = 0.0) -> None:
    effects, ok = s.hello(peer, Hello(device, "device", "site-1", 1, 1), now)
    assert ok and effects == [Send(peer, HelloAck("gw-1", 1, 1000, 100))]


def test_hello_opens_a_session_and_names_the_device_both_ways():
    s, _ = make()
    assert s.touch(PEER, 0.0) is None and s.peer_of("dev-1") is None
    opened(s)
    assert s.touch(PEER, 0.5) == "dev-1" and s.device_of(PEER) == "dev-1" and s.peer_of("dev-1") == PEER
    assert s.open_sessions() == [(PEER, "dev-1")] and len(s) == 1 and PEER in s.sessions


def test_a_wrong_role_or_version_opens_nothing():
    s, _ = make()
    (reply,), ok = s.hello(PEER, Hello("gw-9", "gateway", "site-1", 1, 1), 0.0)
    assert not ok and reply.msg.code == "role"
    (reply,), ok = s.hello(PEER, Hello("dev-1", "device", "site-1", 7, 9), 0.0)
    assert not ok and reply.msg.code == "version" and len(s) == 0


def test_a_batch_for_another_device_or_an_unknown_stream_is_refused():
    s, _ = make()
    opened(s)
    assert s.refusal(PEER, "dev-1", entries(1)) == []
    assert s.refusal(PEER, "dev-1", entries(1, device="dev-2"))[0].msg.code == "wrong-device"
    assert s.refusal(PEER, "dev-1", entries(1, stream="gossip"))[0].msg.code == "bad-stream"


def test_records_are_appended_and_acknowledged_only_once_durable():
    s, _ = make()
    opened(s)
    batch = entries(1, 2, 3)
    (append,), taken = s.accept(PEER, batch)
    assert isinstance(append, Append) and append.payloads == batch.entries and taken == batch.records
    assert append.token == ("device", PEER, "dev-1", "bulk", 1, 3) and s.accepted.get(("dev-1", "bulk"), 0) == 0
    assert s.persisted(PEER, "dev-1", "bulk", 1, 3) == [Send(PEER, TelemetryAck("dev-1", "bulk", 3, 100))]
    assert s.accepted[("dev-1", "bulk")] == 3 and s.counters["records_in"] == 3


def test_only_the_contiguous_run_is_taken_and_resends_are_acknowledged_at_once():
    s, _ = make()
    opened(s)
    effects, taken = s.accept(PEER, entries(1, 2, 4, 5))
    assert effects[0].token[-2:] == (1, 2) and [r[0] for r in taken] == [1, 2]
    assert s.counters["out_of_order"] == 1
    s.persisted(PEER, "dev-1", "bulk", 1, 2)
    assert s.accept(PEER, entries(1, 2)) == ([Send(PEER, TelemetryAck("dev-1", "bulk", 2, 100))], [])
    assert s.counters["resent_records"] == 2


def test_a_refused_append_is_answered_with_no_credit_and_the_run_restarts_there():
    s, _ = make()
    opened(s)
    s.accept(PEER, entries(1, 2))
    ack, log = s.persist_failed(PEER, "dev-1", "bulk", OSError("disk full"))
    assert ack == Send(PEER, TelemetryAck("dev-1", "bulk", 0, 0)) and isinstance(log, Log)
    (append,), _ = s.accept(PEER, entries(1, 2))  # sent again: taken again
    assert append.token[-2:] == (1, 2) and s.counters["refused"] == 1


def test_a_full_critical_stream_grants_no_credit_until_a_heartbeat_finds_room():
    policies = {**GATEWAY_POLICIES, "critical": StreamPolicy(max_bytes=1000)}
    s, outbox = make(policies)
    opened(s)
    outbox.append_many_sync([b"x" * 960], stream="critical")
    s.accept(PEER, entries(1, stream="critical"))
    assert s.persisted(PEER, "dev-1", "critical", 1, 1) == [Send(PEER, TelemetryAck("dev-1", "critical", 1, 0))]
    assert s.heartbeat(PEER, "dev-1", 1.0) == [Send(PEER, Heartbeat(1000))]  # still full: nothing new
    outbox.ack_sync(1, stream="critical")
    assert s.heartbeat(PEER, "dev-1", 2.0) == [Send(PEER, Heartbeat(2000)), Send(PEER, TelemetryAck("dev-1", "critical", 1, 100))]
    assert s.counters["throttled"] == 2


def test_silent_sessions_close_and_a_closed_peer_reaches_nobody():
    s, _ = make()
    opened(s)
    opened(s, "bb02", "dev-2", now=2.0)
    assert s.close_silent(3.0) == []
    (log,) = s.close_silent(3.5)
    assert log.fields == {"device": "dev-1"} and s.peer_of("dev-1") is None and s.peer_of("dev-2") == "bb02"
    assert s.close("bb02") == "dev-2" and s.close("bb02") is None and len(s) == 0

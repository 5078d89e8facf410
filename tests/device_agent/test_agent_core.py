"""The device agent core, fed events by hand on a fake clock (no I/O)."""

import random

from common.effects import (
    UPSTREAM,
    AckQueue,
    Append,
    LinkUp,
    Persisted,
    Received,
    Reconnect,
    Sampled,
    Send,
    SetTimer,
    Start,
    Stop,
    TakeSample,
    TimerFired,
)
from common.memory_queue import MemoryQueue
from common.protocol import ErrorReply, Heartbeat, Hello, HelloAck, TelemetryAck, TelemetryBatch
from device_agent.core import BUFFER, AgentCore


def make(**kw):
    buf = MemoryQueue("buf", max_bytes=1 << 20).start()
    core = AgentCore("dev-1", "site-1", buf, rng=random.Random(1), heartbeat_s=1.0, ack_timeout_s=5.0, **kw)
    return core, buf


def run(core, buf, event, now):
    """Apply the queue effects like a driver would; return all effects."""
    effects = core.handle(event, now)
    for e in effects:
        if isinstance(e, AckQueue):
            buf.ack_sync(e.up_to)
    return effects


def sample(core, buf, now, values=None):
    (append,) = [e for e in core.handle(Sampled(values or {"cpu_percent": 1.0}), now) if isinstance(e, Append)]
    seqs = buf.append_many_sync(append.payloads)
    return run(core, buf, Persisted(append.token, seqs), now)


def sends(effects):
    return [e.msg for e in effects if isinstance(e, Send)]


def test_start_says_hello_and_arms_timers():
    core, _ = make()
    effects = core.handle(Start(), 100.0)
    assert sends(effects) == [Hello("dev-1", "device", "site-1", 1, 1)]
    assert {e.name for e in effects if isinstance(e, SetTimer)} == {"sample", "heartbeat"}


def test_sample_timer_asks_for_a_sample_and_rearms():
    core, _ = make(sample_interval_s=2.0)
    effects = core.handle(TimerFired("sample"), 10.0)
    assert TakeSample() in effects and SetTimer("sample", 12.0) in effects


def test_samples_buffer_before_link_is_up_and_flow_after_helloack():
    core, buf = make()
    core.handle(Start(), 0.0)
    assert sends(sample(core, buf, 0.1)) == []  # buffered, nothing sent while connecting
    effects = run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000)), 0.2)
    (batch,) = [m for m in sends(effects) if isinstance(m, TelemetryBatch)]
    assert [r.seq for r in batch.records] == [1] and batch.records[0].values == {"cpu_percent": 1.0}


def test_ack_drops_buffer_and_only_acked():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000)), 0.0)
    for i in range(3):
        sample(core, buf, 0.1 * i)
    effects = run(core, buf, Received(UPSTREAM, TelemetryAck("dev-1", 2)), 1.0)
    assert AckQueue(BUFFER, 2) in effects
    assert [s for s, _ in buf.read()] == [3]
    assert not core.drained
    run(core, buf, Received(UPSTREAM, TelemetryAck("dev-1", 3)), 1.1)
    assert core.drained and len(buf) == 0


def test_ack_for_another_device_is_ignored():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000)), 0.0)
    sample(core, buf, 0.1)
    assert run(core, buf, Received(UPSTREAM, TelemetryAck("dev-2", 1)), 0.2) == []
    assert len(buf) == 1


def test_unacknowledged_records_are_resent_after_timeout():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000)), 0.0)
    sample(core, buf, 0.1)
    sample(core, buf, 0.2)
    # gateway stays alive (heartbeats) but never acknowledges
    run(core, buf, Received(UPSTREAM, Heartbeat(0)), 5.0)
    assert not [m for m in sends(run(core, buf, TimerFired("heartbeat"), 5.05)) if isinstance(m, TelemetryBatch)]
    run(core, buf, Received(UPSTREAM, Heartbeat(0)), 6.0)
    resent = [m for m in sends(run(core, buf, TimerFired("heartbeat"), 6.1)) if isinstance(m, TelemetryBatch)]
    assert [r.seq for b in resent for r in b.records] == [1, 2]
    assert core.sender.resends == 1


def test_silent_gateway_is_declared_dead_after_three_intervals_and_reconnected_with_jitter():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000)), 0.0)
    assert not [e for e in run(core, buf, TimerFired("heartbeat"), 3.0) if isinstance(e, Reconnect)]
    (rc,) = [e for e in run(core, buf, TimerFired("heartbeat"), 3.01) if isinstance(e, Reconnect)]
    assert 0.25 <= rc.delay <= 0.5
    assert not core.uplink.up
    assert sends(run(core, buf, LinkUp(), 4.0)) == [core.uplink.hello]


def test_hello_first_error_reintroduces_the_device():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000)), 0.0)
    effects = run(core, buf, Received(UPSTREAM, ErrorReply("hello-first", "restarted")), 1.0)
    assert sends(effects) == [core.uplink.hello]


def test_stop_ends_sampling():
    core, buf = make()
    core.handle(Start(), 0.0)
    core.handle(Stop(), 1.0)
    assert core.handle(TimerFired("sample"), 1.5) == []
    assert core.handle(Sampled({"x": 1.0}), 1.5) == []

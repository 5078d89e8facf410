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
from common.streams import DEVICE_POLICIES
from common.protocol import ErrorReply, Heartbeat, Hello, HelloAck, TelemetryAck, TelemetryBatch
from device_agent.core import BUFFER, AgentCore


def make(**kw):
    buf = MemoryQueue("buf", streams=DEVICE_POLICIES).start()
    core = AgentCore("dev-1", "site-1", buf, rng=random.Random(1), heartbeat_s=1.0, ack_timeout_s=5.0, **kw)
    return core, buf


def run(core, buf, event, now):
    """Apply the queue effects like a driver would; return all effects."""
    effects = core.handle(event, now)
    for e in effects:
        if isinstance(e, AckQueue):
            buf.ack_sync(e.up_to, stream=e.stream)
    return effects


def sample(core, buf, now, values=None):
    (append,) = [e for e in core.handle(Sampled(values or {"cpu_percent": 1.0}), now) if isinstance(e, Append)]
    seqs = buf.append_many_sync(append.payloads, stream=append.stream)
    return run(core, buf, Persisted(append.token, seqs), now)


def sends(effects):
    return [e.msg for e in effects if isinstance(e, Send)]


def test_start_says_hello_and_arms_timers():
    core, _ = make()
    effects = core.handle(Start(), 100.0)
    assert sends(effects) == [Hello("dev-1", "device", "site-1", 1, 1)]
    assert {e.name for e in effects if isinstance(e, SetTimer)} == {"sample", "heartbeat", "hello", "inventory"}


def test_unanswered_hello_is_retried_soon_then_less_often():
    core, buf = make()
    effects = core.handle(Start(), 100.0)
    (first,) = [e for e in effects if isinstance(e, SetTimer) and e.name == "hello"]
    retry = core.handle(TimerFired("hello"), first.at)
    assert sends(retry) == [core.uplink.hello]
    (second,) = [e for e in retry if isinstance(e, SetTimer)]
    assert second.at - first.at == 2 * (first.at - 100.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), second.at - 0.01)
    assert core.handle(TimerFired("hello"), second.at) == []  # answered: no more Hellos


def test_sample_timer_asks_for_a_sample_and_rearms():
    core, _ = make(sample_interval_s=2.0)
    effects = core.handle(TimerFired("sample"), 10.0)
    assert TakeSample() in effects and SetTimer("sample", 12.0) in effects


def test_samples_buffer_before_link_is_up_and_flow_after_helloack():
    core, buf = make()
    core.handle(Start(), 0.0)
    assert sends(sample(core, buf, 0.1)) == []  # buffered, nothing sent while connecting
    effects = run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.2)
    (batch,) = [m for m in sends(effects) if isinstance(m, TelemetryBatch)]
    assert [r.seq for r in batch.records] == [1] and batch.records[0].values == {"cpu_percent": 1.0}


def test_ack_drops_buffer_and_only_acked():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.0)
    for i in range(3):
        sample(core, buf, 0.1 * i)
    effects = run(core, buf, Received(UPSTREAM, TelemetryAck("dev-1", "bulk", 2, 100)), 1.0)
    assert AckQueue(BUFFER, "bulk", 2) in effects
    assert [s for s, _ in buf.read(stream="bulk")] == [3]
    assert not core.drained
    run(core, buf, Received(UPSTREAM, TelemetryAck("dev-1", "bulk", 3, 100)), 1.1)
    assert core.drained and len(buf) == 0


def test_ack_for_another_device_is_ignored():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.0)
    sample(core, buf, 0.1)
    assert run(core, buf, Received(UPSTREAM, TelemetryAck("dev-2", "bulk", 1, 100)), 0.2) == []
    assert len(buf) == 1


def test_unacknowledged_records_are_resent_after_timeout():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.0)
    sample(core, buf, 0.1)
    sample(core, buf, 0.2)
    # gateway stays alive (heartbeats) but never acknowledges
    run(core, buf, Received(UPSTREAM, Heartbeat(0)), 5.0)
    assert not [m for m in sends(run(core, buf, TimerFired("heartbeat"), 5.05)) if isinstance(m, TelemetryBatch)]
    run(core, buf, Received(UPSTREAM, Heartbeat(0)), 6.0)
    resent = [m for m in sends(run(core, buf, TimerFired("heartbeat"), 6.1)) if isinstance(m, TelemetryBatch)]
    assert [r.seq for b in resent for r in b.records] == [1, 2]
    assert core.senders["bulk"].resends == 1


def test_silent_gateway_is_declared_dead_after_three_intervals_and_reconnected_with_jitter():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.0)
    assert not [e for e in run(core, buf, TimerFired("heartbeat"), 3.0) if isinstance(e, Reconnect)]
    (rc,) = [e for e in run(core, buf, TimerFired("heartbeat"), 3.01) if isinstance(e, Reconnect)]
    assert 0.0 <= rc.delay <= core.rejoin_spread_s  # the first try is spread wide: the whole site noticed too
    run(core, buf, LinkUp(), 3.01 + rc.delay)
    (again,) = [e for e in run(core, buf, TimerFired("heartbeat"), 3.01 + rc.delay + 3.1) if isinstance(e, Reconnect)]
    assert 0.5 <= again.delay <= 1.0  # then the backoff: base 1 s after the first attempt, equal jitter
    assert not core.uplink.up
    assert sends(run(core, buf, LinkUp(), 4.0)) == [core.uplink.hello]


def test_hello_first_error_reintroduces_the_device_after_a_random_part_of_the_spread():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.0)
    (timer,) = run(core, buf, Received(UPSTREAM, ErrorReply("hello-first", "restarted")), 1.0)
    assert timer.name == "rejoin" and 1.0 <= timer.at <= 1.0 + core.rejoin_spread_s
    again = run(core, buf, Received(UPSTREAM, ErrorReply("hello-first", "again")), 1.1)
    assert not [e for e in again if isinstance(e, SetTimer)]  # one rejoin, not one per error
    assert [e for e in run(core, buf, TimerFired("heartbeat"), 4.5) if isinstance(e, Reconnect)] == []
    assert sends(run(core, buf, TimerFired("rejoin"), timer.at)) == [core.uplink.hello]


def test_rejoin_times_of_a_site_spread_over_the_window():
    cores = [AgentCore(f"d{i}", "s", MemoryQueue(streams=DEVICE_POLICIES).start(), rng=random.Random(i)) for i in range(200)]
    at = []
    for c in cores:
        c.handle(Start(), 0.0)
        c.handle(Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.0)
        (timer,) = c.handle(Received(UPSTREAM, ErrorReply("hello-first", "restarted")), 1.0)
        at.append(int(timer.at - 1.0))
    assert max(at.count(second) for second in set(at)) <= 50  # no second with more than a quarter


def test_stop_ends_sampling():
    core, buf = make()
    core.handle(Start(), 0.0)
    core.handle(Stop(), 1.0)
    assert core.handle(TimerFired("sample"), 1.5) == []
    assert core.handle(Sampled({"x": 1.0}), 1.5) == []


def test_credit_zero_holds_records_in_the_buffer_until_credit_returns():
    core, buf = make()
    core.handle(Start(), 0.0)
    run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.0)
    sample(core, buf, 0.1)
    run(core, buf, Received(UPSTREAM, TelemetryAck("dev-1", "bulk", 1, 0)), 0.2)  # gateway full
    assert not [m for m in sends(sample(core, buf, 0.3)) if isinstance(m, TelemetryBatch)]
    effects = run(core, buf, Received(UPSTREAM, TelemetryAck("dev-1", "bulk", 1, 50)), 0.4)
    (batch,) = [m for m in sends(effects) if isinstance(m, TelemetryBatch)]
    assert [r.seq for r in batch.records] == [2] and batch.base == 1


def test_critical_records_are_sent_before_bulk():
    core, buf = make()
    core.handle(Start(), 0.0)
    sample(core, buf, 0.1)
    (append,) = core.record("critical", "alert", {"code": "overheat"}, 0.2)
    core.handle(Persisted(append.token, buf.append_many_sync(append.payloads, stream="critical")), 0.2)
    batches = [m for m in sends(run(core, buf, Received(UPSTREAM, HelloAck("gw", 1, 1000, 100)), 0.3)) if isinstance(m, TelemetryBatch)]
    assert [b.stream for b in batches] == ["critical", "bulk"]


def test_commands_run_once_and_are_acknowledged():
    from common.effects import CommandResult, RunCommand
    from common.protocol import Command, CommandAck

    core, buf = make()
    core.handle(Start(), 0.0)
    cmd = Command("dev-1", 1, "ping", {}, 10_000)
    (run_it,) = core.handle(Received(UPSTREAM, cmd), 1.0)
    assert run_it == RunCommand(cmd)
    assert core.handle(Received(UPSTREAM, cmd), 1.1) == []  # still running: not started twice
    assert sends(core.handle(CommandResult(1, "done", "pong"), 1.2)) == [CommandAck("dev-1", 1, "done", "pong")]
    assert sends(core.handle(Received(UPSTREAM, cmd), 1.3)) == [CommandAck("dev-1", 1, "done", "already run")]


def test_a_command_held_back_at_the_gateway_still_runs_after_a_later_numbered_one():
    """A rollout's install waits at the gateway for its window while a ping (a higher number) gets
    through: the install must still run when it is released, and only once."""
    from common.effects import CommandResult, RunCommand
    from common.protocol import Command, CommandAck

    core, buf = make()
    core.handle(Start(), 0.0)
    ping, install = Command("dev-1", 8, "ping", {}, 10_000), Command("dev-1", 5, "update", {"version": "2.0"}, 10_000)
    assert core.handle(Received(UPSTREAM, ping), 1.0) == [RunCommand(ping)]
    core.handle(CommandResult(8, "done", "pong"), 1.1)
    assert core.handle(Received(UPSTREAM, install), 1.2) == [RunCommand(install)]
    core.handle(CommandResult(5, "done", "installed"), 1.3)
    assert sends(core.handle(Received(UPSTREAM, install), 1.4)) == [CommandAck("dev-1", 5, "done", "already run")]
    late = Command("dev-1", 2, "ping", {}, 500)
    assert sends(core.handle(Received(UPSTREAM, late), 1.4))[0].status == "failed"


def test_a_deferred_install_is_acknowledged_as_such_and_runs_when_it_comes_again():
    """A late install (the release arrived after the window closed) was not begun: the device answers
    ``deferred`` and runs the command when its gateway sends it again in the next window."""
    from common.effects import CommandResult, RunCommand
    from common.install_deadline import DEFERRED
    from common.protocol import Command, CommandAck

    core, buf = make()
    core.handle(Start(), 0.0)
    install = Command("dev-1", 5, "update", {"version": "2.0", "install_by_ms": "1000"}, 10_000)
    assert core.handle(Received(UPSTREAM, install), 0.5) == [RunCommand(install)]
    assert sends(core.handle(CommandResult(5, DEFERRED, "late"), 1.2)) == [CommandAck("dev-1", 5, DEFERRED, "late")]
    assert not core.ran.ran(5)
    assert core.handle(Received(UPSTREAM, install), 2.0) == [RunCommand(install)]
    core.handle(CommandResult(5, "done", "installing"), 2.1)
    assert sends(core.handle(Received(UPSTREAM, install), 2.2)) == [CommandAck("dev-1", 5, "done", "already run")]

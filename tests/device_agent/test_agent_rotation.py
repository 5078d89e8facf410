"""Key and certificate rotation in the agent core, on a fake clock: scheduled, forced, on return from
offline, and what a refused or expired rotation does. Also the cloud-signature check of commands."""

import random

from common.effects import UPSTREAM, Reconnect, Received, RunCommand, Send, SetTimer, Start, TimerFired
from common.memory_queue import MemoryQueue
from common.protocol import Command, CommandAck, HelloAck
from common.protocol.messages import EnrollReply, KeyRotation
from common.rotation import RotationSchedule
from common.security_events import InstallRotation, PrepareRotation, RotateNow, RotationInstalled, RotationKeyReady
from common.streams import DEVICE_POLICIES
from device_agent.core import AgentCore
from device_agent.enroll import next_step

DAY_MS = 86_400_000
SCHEDULE = RotationSchedule(0, 90 * DAY_MS, check_every_s=3600)  # due at day 60


def make(**kw):
    buf = MemoryQueue("buf", streams=DEVICE_POLICIES).start()
    return AgentCore("dev-1", "site-1", buf, rng=random.Random(1), **kw)


def up(core, now):
    return core.handle(Received(UPSTREAM, HelloAck("gw-1", 1, 1000, 100)), now)


def test_the_schedule_checks_hourly_on_apschedulers_calendar_and_never_past_the_due_time() -> None:
    assert SCHEDULE.due_ms == 60 * DAY_MS
    assert SCHEDULE.next_check(10.0) == 3600.0
    due_s = SCHEDULE.due_ms / 1000
    assert SCHEDULE.next_check(due_s - 10) == due_s
    assert not SCHEDULE.due(SCHEDULE.due_ms - 1) and SCHEDULE.due(SCHEDULE.due_ms)
    assert SCHEDULE.expired(90 * DAY_MS) and not SCHEDULE.expired(90 * DAY_MS - 1)


def test_a_due_certificate_rotates_at_its_check_and_the_new_key_is_used_after_a_reconnect() -> None:
    core = make(rotation=SCHEDULE)
    start = core.handle(Start(), 0.0)
    assert SetTimer("rotate-check", 3600.0) in start
    up(core, 1.0)
    assert [e for e in core.handle(TimerFired("rotate-check"), 3600.0) if isinstance(e, PrepareRotation)] == []
    due_s = SCHEDULE.due_ms / 1000
    out = core.handle(TimerFired("rotate-check"), due_s)
    assert PrepareRotation() in out and core.rotating
    assert core.handle(TimerFired("rotate-check"), due_s + 3600) == [SetTimer("rotate-check", due_s + 7200)]  # once
    assert core.handle(RotationKeyReady("N" * 40), due_s + 1) == [Send(UPSTREAM, KeyRotation("dev-1", "N" * 40))]
    reply = EnrollReply("dev-1", "N" * 40, "accept", "rotated", b"PEM")
    assert core.handle(Received(UPSTREAM, reply), due_s + 2) == [InstallRotation(reply)]
    out = core.handle(RotationInstalled(due_s * 1000, due_s * 1000 + 90 * DAY_MS), due_s + 3)
    assert Reconnect(0.0) in out and not core.rotating and core.rotations == 1
    assert not core.rotation.due(int((due_s + 4) * 1000))  # the new certificate's schedule


def test_back_from_offline_past_its_rotation_time_it_rotates_when_the_session_comes_up() -> None:
    core = make(rotation=SCHEDULE)
    core.handle(Start(), 70 * 86_400.0)
    assert PrepareRotation() in up(core, 70 * 86_400.0 + 1)


def test_a_refused_rotation_is_tried_again_at_a_later_check_and_rotate_now_forces_one() -> None:
    core = make(rotation=SCHEDULE)
    core.handle(Start(), 0.0)
    up(core, 1.0)
    assert core.handle(RotateNow(), 2.0) == [PrepareRotation()]
    core.handle(RotationKeyReady("N" * 40), 2.1)
    out = core.handle(Received(UPSTREAM, EnrollReply("dev-1", "N" * 40, "refuse", "revoked", b"")), 2.2)
    assert not core.rotating and "revoked" in out[0].fields["reason"]
    assert core.handle(RotateNow(), 3.0) == [PrepareRotation()]


def test_commands_are_run_only_when_the_check_passes() -> None:
    core = make(command_check=lambda cmd, now_ms: None if cmd.envelope == b"good" else "not signed by the cloud")
    core.handle(Start(), 0.0)
    up(core, 1.0)
    forged = core.handle(Received(UPSTREAM, Command("dev-1", 7, "echo", {}, 10_000_000, b"")), 2.0)
    assert [e.msg for e in forged if isinstance(e, Send)] == [CommandAck("dev-1", 7, "failed", "refused: not signed by the cloud")]
    assert core.commands_refused == {7: "not signed by the cloud"} and core.commands_run == []
    good = core.handle(Received(UPSTREAM, Command("dev-1", 8, "echo", {}, 10_000_000, b"good")), 2.0)
    assert [type(e) for e in good] == [RunCommand] and core.commands_run == [8]


def test_an_enrollment_answer_decides_done_retry_or_a_refusal_naming_the_reason() -> None:
    import pytest

    from common.errors import EnrollmentError

    assert next_step("dev-1", EnrollReply("dev-1", "k", "accept", "", b"PEM")) == "done"
    for reply in (None, EnrollReply("dev-1", "k", "pending", "", b""), EnrollReply("dev-1", "k", "retry", "", b"")):
        assert next_step("dev-1", reply) == "retry"
    with pytest.raises(EnrollmentError, match="dev-1.*used up"):
        next_step("dev-1", EnrollReply("dev-1", "k", "refuse", "claim token x is used up", b""))

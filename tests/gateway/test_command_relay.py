"""gateway.command_relay.CommandRelay on its own: commands held for devices, delivered when they are here,
released by the site's rollout, reported when done or expired."""

from common.effects import UPSTREAM, AckQueue, Append, Send
from common.install_deadline import DEFERRED
from common.memory_queue import MemoryQueue
from common.protocol import Command, CommandAck, decode_record
from gateway.command_relay import CommandRelay
from gateway.reports import COMMANDS
from gateway.rollout_effects import GATE

HERE = {"dev-1": "aa01"}  # who is connected now


def make(queue: MemoryQueue | None = None) -> CommandRelay:
    relay = CommandRelay(MemoryQueue("commands").start() if queue is None else queue, connected=HERE.get)
    relay.start()
    return relay


def held(relay: CommandRelay, cmd: Command, now: float) -> list:
    (append,) = relay.from_cloud(cmd)
    assert append.queue == COMMANDS and append.token == ("command", cmd)
    (qseq,) = relay.queue.append_many_sync(append.payloads)
    return relay.persisted(cmd, qseq, now)


def reports(effects) -> list[dict]:
    return [decode_record(e.payloads[0]).values for e in effects if isinstance(e, Append)]


def test_a_command_is_held_then_sent_to_its_device_if_connected():
    relay = make()
    here, away = Command("dev-1", 1, "ping", {}, 10**12), Command("dev-2", 1, "ping", {}, 10**12)
    assert held(relay, here, 1.0) == [Send(UPSTREAM, CommandAck("dev-1", 1, "held", "")), Send("aa01", here)]
    assert held(relay, away, 1.0) == [Send(UPSTREAM, CommandAck("dev-2", 1, "held", ""))]
    assert relay.from_cloud(away) == [Send(UPSTREAM, CommandAck("dev-2", 1, "held", "again"))]
    assert relay.deliverable("dev-2", "bb02", 2.0) == [Send("bb02", away)] and relay.count() == 2


def test_done_is_reported_once_with_the_gateways_times_for_a_ping_and_the_queue_moves_on():
    relay = make()
    held(relay, Command("dev-1", 4, "ping", {}, 10**12), 1.0)
    effects = relay.done("dev-1", 4, "done", "pong", 2.5)
    [values] = reports(effects)
    assert values["status"] == "done" and values["detail"] == "pong gateway_held_ms=1000 gateway_done_ms=2500"
    assert AckQueue(COMMANDS, "default", 1) in effects and relay.counters["commands_delivered"] == 1
    assert relay.done("dev-1", 4, "done", "pong", 2.6) == []  # a repeated acknowledgement


def test_expired_commands_are_reported_and_finished():
    relay = make()
    held(relay, Command("dev-2", 1, "reboot", {}, 5_000), 1.0)
    assert relay.tick(4.0) == []
    effects = relay.tick(5.0)
    assert [v["status"] for v in reports(effects)] == ["expired"] and AckQueue(COMMANDS, "default", 1) in effects
    assert relay.deliverable("dev-2", "bb02", 6.0) == [] and relay.counters["commands_expired"] == 1


def test_a_site_gated_command_waits_for_the_release_and_not_past_its_deadline():
    relay = make()
    gated = Command("dev-1", 2, "update", {"gate": GATE, "version": "2.0"}, 10**12)
    assert held(relay, gated, 1.0) == [Send(UPSTREAM, CommandAck("dev-1", 2, "held", ""))]
    assert relay.deliverable("dev-1", "aa01", 1.5) == []
    assert relay.release(["dev-1", "dev-3"], 3_000, 2.0) == [Send("aa01", gated)]
    assert relay.deliverable("dev-1", "aa01", 2.5) == [Send("aa01", gated)]
    assert relay.deliverable("dev-1", "aa01", 3.0) == []  # the window closed


def test_unfinished_commands_are_read_back_after_a_restart():
    queue = MemoryQueue("commands").start()
    first = make(queue)
    cmd = Command("dev-2", 9, "config", {"k": "v"}, 10**12)
    held(first, cmd, 1.0)
    assert make(queue).deliverable("dev-2", "bb02", 2.0) == [Send("bb02", cmd)]


def test_without_a_queue_nothing_is_held():
    relay = CommandRelay(None, connected=HERE.get)
    relay.start()
    assert relay.from_cloud(Command("dev-1", 1, "ping", {}, 10**12)) == [] and relay.count() == 0


def test_a_deferred_install_stays_held_unreleased_until_its_rollout_releases_it_again():
    relay = make()
    cmd = Command("dev-1", 7, "update", {"version": "2.0.0", "gate": GATE, "rollout": "r1"}, 10**12)
    held(relay, cmd, 1.0)
    assert relay.release(["dev-1"], 60_000, 2.0, "r1") == [Send("aa01", cmd)]
    # the device had the release only after its window closed: it did not begin
    assert relay.done("dev-1", 7, DEFERRED, "late_install_refused: window closed", 70.0) == []
    assert relay.count() == 1 and relay.counters["commands_delivered"] == 0
    assert relay.deliverable("dev-1", "aa01", 71.0) == []  # its release was withdrawn: a reconnect does not resend it
    assert relay.release(["dev-1"], 200_000, 100.0, "r1") == [Send("aa01", cmd)]  # the next window
    assert [v["status"] for v in reports(relay.done("dev-1", 7, "done", "installing", 110.0))] == ["done"]
    assert relay.count() == 0


def test_deferred_does_not_hold_an_ungated_command():
    relay = make()
    held(relay, Command("dev-1", 8, "update", {"version": "2.0.0", "install_by_ms": "5000"}, 10**12), 1.0)
    [values] = reports(relay.done("dev-1", 8, DEFERRED, "late", 9.0))  # the cloud's store knows final statuses only
    assert (values["status"], values["detail"]) == ("failed", f"{DEFERRED}: late")
    assert relay.count() == 0  # the cloud's engine sends a new command in the next window

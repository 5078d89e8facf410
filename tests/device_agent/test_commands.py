"""Device commands: ping, echo, unknown names, and simulate (metric overrides for drills)."""

from __future__ import annotations

import pytest

from common.protocol import Command
from device_agent.commands import MAX_OVERRIDES, Simulation, run_command
from device_agent.sampler import sample_metrics


def cmd(name: str, **args: str) -> Command:
    return Command("dev-1", 1, name, args, 2**62)


def test_ping_echo_and_unknown() -> None:
    assert run_command(cmd("ping")) == ("done", "pong")
    assert run_command(cmd("echo", a="1")) == ("done", '{"a": "1"}')
    status, detail = run_command(cmd("reboot-the-world"))
    assert status == "failed" and "simulate" in detail and "ping" in detail


def test_simulate_is_refused_unless_the_agent_allows_it() -> None:
    assert run_command(cmd("simulate", battery_percent="10")) == (
        "failed",
        "simulation is disabled on this agent (start it with --allow-simulation)",
    )
    off = Simulation(enabled=False)
    assert run_command(cmd("simulate", battery_percent="10"), off)[0] == "failed"
    assert off.overrides == {}


def test_simulate_sets_and_clears_overrides_that_samples_carry() -> None:
    sim = Simulation(enabled=True)
    assert run_command(cmd("simulate", battery_percent="10", cpu_percent="99.5"), sim) == (
        "done",
        "simulating: battery_percent=10, cpu_percent=99.5",
    )
    sample = sample_metrics("/", sim.overrides)
    assert sample["battery_percent"] == 10.0 and sample["cpu_percent"] == 99.5
    assert run_command(cmd("simulate", battery_percent=""), sim) == ("done", "simulating: cpu_percent=99.5")
    assert run_command(cmd("simulate", cpu_percent=""), sim) == ("done", "simulating: none")
    assert sim.overrides == {}
    real = sample_metrics("/", sim.overrides)
    assert "mem_percent" in real and real.get("battery_percent") != 10.0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({}, "needs METRIC=VALUE"),
        ({"battery_percent": "low"}, "'low' is not a number"),
        ({"battery_percent": "nan"}, "not a finite number"),
        ({"Battery Percent": "1"}, "is not a metric name"),
    ],
)
def test_simulate_refuses_bad_arguments_and_changes_nothing(args: dict[str, str], says: str) -> None:
    sim = Simulation(enabled=True)
    sim.overrides = {"cpu_percent": 1.0}
    status, detail = sim.apply(args)
    assert status == "failed" and says in detail
    assert sim.overrides == {"cpu_percent": 1.0}


def test_simulate_bounds_how_many_metrics_it_overrides() -> None:
    sim = Simulation(enabled=True)
    assert sim.apply({f"m{i}": "1" for i in range(MAX_OVERRIDES)})[0] == "done"
    status, detail = sim.apply({"one_more": "1"})
    assert status == "failed" and str(MAX_OVERRIDES) in detail
    assert len(sim.overrides) == MAX_OVERRIDES


def test_each_command_number_runs_once_in_whatever_order_the_numbers_arrive():
    from device_agent.commands import RunWindow

    w = RunWindow()
    for seq in (5, 3, 9):  # 3 and 5 arrive after 9? no matter: each runs
        assert not w.ran(seq)
        w.add(seq)
    assert w.ran(3) and w.ran(5) and w.ran(9) and not w.ran(4) and not w.ran(7)
    w.add(9 + RunWindow.WINDOW + 1)
    assert w.ran(4)  # below the window: counted as run (a replay that old is refused)
    again = RunWindow.from_dict(w.to_dict())
    assert again.ran(9 + RunWindow.WINDOW + 1) and not again.ran(9 + RunWindow.WINDOW)


def test_the_first_log_format_means_everything_up_to_its_number_ran(tmp_path):
    import json

    from device_agent.commands import CommandLog

    (tmp_path / "commands.json").write_text(json.dumps({"last_command": 7}))
    log = CommandLog(tmp_path / "commands.json")
    assert log.load().ran(7) and log.load().ran(1) and not log.load().ran(8)
    log.starting(8)
    assert CommandLog(tmp_path / "commands.json").load().ran(8)


def test_a_deferred_command_is_forgotten_by_the_persisted_run_window(tmp_path) -> None:
    from device_agent.commands import CommandLog

    log = CommandLog(tmp_path / "commands.json")
    log.starting(4)
    log.starting(5)
    log.deferred(5)  # a late install: not run
    again = CommandLog(tmp_path / "commands.json").window
    assert again.ran(4) and not again.ran(5)

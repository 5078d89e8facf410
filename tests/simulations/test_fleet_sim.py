"""``edgefleet sim fleet`` on the small scenario: every core and fault exercised, the invariants hold,
a seed replays exactly, and a broken part is named by the invariant it breaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.errors import ConfigError
from simulations.cli import sim
from simulations.fleet_sim.board import MemoryBoard
from simulations.fleet_sim.cloud import FleetStore
from simulations.fleet_sim.run import run_fleet
from simulations.fleet_sim.scenario import load_scenario

SMALL = Path(__file__).resolve().parents[2] / "simulations" / "scenarios" / "small.toml"
MACHINE = ("wall_s", "peak_rss_mb")  # what may differ between two runs of one seed


@pytest.fixture(scope="module")
def small() -> dict:
    result, _ = run_fleet(load_scenario(SMALL))
    return result


def test_the_small_fleet_runs_every_core_and_fault_and_every_invariant_holds(small: dict) -> None:
    assert small["invariants_failed"] == 0, small["first_violations"]
    assert set(small["invariants"]) >= {"nothing_acknowledged_lost", "every_drop_reported", "none_bricked",
                                        "installs_inside_window", "revoked_not_accepted",
                                        "one_wan_transfer_per_release_site"}
    assert small["records_lost"] == 0 and small["bricked"] == 0 and small["installs_outside_window"] == 0
    assert small["drained"] is True
    assert small["records_stored"] > 2000  # telemetry crossed devices, gateways and the cloud
    assert small["updates_committed"] >= 20 and small["updates_rolled_back"] >= 1  # the bad release failed its canary
    assert small["rollouts"]["rollout-2.0.0"]["state"] == "completed"
    assert small["rollouts"]["rollout-2.1.0"]["state"] == "paused"  # stopped by its failure threshold
    assert small["power_cuts"] >= 1 and small["gateway_crashes"] >= 1 and small["link_outages"] >= 1
    assert small["revoked_devices"] == 1 and small["revoked_refused"] >= 1 and small["revoked_accepted"] == 0
    assert small["wan_transfers"] == small["sites"] * 2 and small["wan_transfers_max_per_release_site"] == 1
    assert small["frames_lost"] > 0 and small["duplicates_refused"] > 0  # lossy links: resends the store refused
    assert small["records_dropped"] > 0 and small["gaps_stored"] > 0  # a small outbox evicted during outages


def test_the_same_seed_replays_exactly_and_another_seed_does_not(small: dict) -> None:
    again, _ = run_fleet(load_scenario(SMALL))
    assert {k: v for k, v in again.items() if k not in MACHINE} == {k: v for k, v in small.items() if k not in MACHINE}
    other, _ = run_fleet(load_scenario(SMALL, seed=8))
    assert other["frames_sent"] != small["frames_sent"]


def test_a_store_that_loses_a_record_is_caught_naming_the_device_and_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    real = FleetStore.ingest
    lost: list[object] = []

    def lossy(self: FleetStore, records: list, now_ms: int) -> tuple[int, int]:
        if not lost and any(r.seq == 5 and r.stream == "bulk" for r in records):
            lost.append(next(r for r in records if r.seq == 5 and r.stream == "bulk"))
            records = [r for r in records if r is not lost[0]]
        return real(self, records, now_ms)

    monkeypatch.setattr(FleetStore, "ingest", lossy)
    result, fleet = run_fleet(load_scenario(SMALL))
    assert result["records_lost"] == 1 and result["invariants_failed"] == 1
    first = fleet.invariants.first["nothing_acknowledged_lost"]
    assert first.event.startswith(f"{lost[0].device_id} bulk #5 ") and first.virtual_s > 8 * 3600


def test_a_gap_report_that_never_arrives_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = FleetStore.ingest

    def no_gaps(self: FleetStore, records: list, now_ms: int) -> tuple[int, int]:
        return real(self, [r for r in records if r.kind != "gap"], now_ms)

    monkeypatch.setattr(FleetStore, "ingest", no_gaps)
    result, fleet = run_fleet(load_scenario(SMALL))
    assert result["invariants"]["every_drop_reported"] > 0
    assert "no gap stored" in fleet.invariants.first["every_drop_reported"].event


def test_the_cli_prints_the_summary_as_the_last_json_line() -> None:
    out = CliRunner().invoke(sim, ["fleet", "--scenario", str(SMALL), "--seed", "7", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    for key in ("devices", "virtual_hours", "wall_s", "peak_rss_mb", "invariants_failed", "records_lost", "bricked",
                "installs_outside_window"):
        assert key in summary
    assert summary["devices"] == 24 and summary["invariants_failed"] == 0


def test_a_scenario_with_an_unknown_link_key_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[fleet]\nsites = 1\n[link]\nbandwith_bytes_s = 10\n')
    with pytest.raises(ConfigError, match="bandwith_bytes_s"):
        load_scenario(bad)


def test_the_board_boots_the_old_slot_after_a_torn_write_and_falls_back_from_a_failed_trial() -> None:
    board = MemoryBoard()
    board.mark_bad("B")
    board.slots["B"] = ("2.0.0", False)  # power cut mid-write
    assert board.boot() == "A" and board.check() == ""
    board.slots["B"] = ("2.0.0", True)
    board.set_try_once("B")
    assert board.boot() == "B"  # the trial boot
    for _ in range(3):
        board.boot()
    assert board.active_slot() == "A" and board.env["status"]["B"] == "bad"  # past its boot limit: back to A
    board.env["status"]["A"] = "bad"
    assert "bricked" in pytest.raises(Exception, board.boot).value.args[0]


def test_the_report_is_markdown_with_every_invariant_and_its_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from simulations.fleet_sim.report import write_report

    result, fleet = run_fleet(load_scenario(SMALL))
    md = write_report(fleet, result, tmp_path).read_text()
    for name in result["invariants"]:
        assert f"`{name}`" in md
    assert "peak RSS" in md and "rollout-2.1.0" in md
    for png in ("backlog.png", "uplink.png", "outcomes.png", "latency.png", "rollout-2.0.0.png", "rollout-2.1.0.png"):
        assert f"]({png})" in md and (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_frames_on_one_link_arrive_in_the_order_they_were_sent() -> None:
    import random

    from simulations.fleet_sim.network import FifoNetwork
    from simulations.virtual import LinkProfile, VirtualClock

    clock = VirtualClock(0.0)
    net = FifoNetwork(clock, random.Random(1), LinkProfile(0.001, 0.5))
    got: list[tuple[str, int]] = []
    for i in range(200):
        net.send("a", "b", lambda i=i: got.append(("ab", i)))
        net.send("b", "a", lambda i=i: got.append(("ba", i)))
    clock.run_until(10.0)
    assert [i for link, i in got if link == "ab"] == list(range(200))
    assert [i for link, i in got if link == "ba"] == list(range(200))
    assert [link for link, _ in got] != ["ab", "ba"] * 200  # the two directions are independent


def _slow_site(tmp_path: Path) -> Path:
    """The small fleet with site 2 on a 1 kB/s windowed link for 14 h: the release reaches its cache after
    some of its devices were released, so they have it only after their window closed."""
    slow = tmp_path / "slow-site.toml"
    slow.write_text(SMALL.read_text().replace("bandwidth_bytes_s = 4000", "bandwidth_bytes_s = 1000")
                    .replace("hours = 8\n", "hours = 14\n", 1))
    return slow


def test_a_device_that_has_the_release_only_after_its_window_refuses_and_installs_in_the_next(tmp_path: Path) -> None:
    result, fleet = run_fleet(load_scenario(_slow_site(tmp_path)))
    assert result["late_installs_refused"] >= 1  # the device held the deadline the cloud signed into the command
    assert result["installs_outside_window"] == 0 and result["invariants_failed"] == 0, result["first_violations"]
    done = result["rollouts"]["rollout-2.0.0"]  # ... and was released again in its next window: every device updated
    assert done["state"] == "completed" and done["succeeded"] == 24
    site = next(g for g in fleet.gateways if g.name == "gw-s002").site_rollouts.engines["rollout-2.0.0"]
    assert site.counters["late_installs_refused"] == result["late_installs_refused"]  # not counted as failures
    assert not any(r.exhausted or r.state.value == "failed" for r in site.devices.values())


def test_without_the_deadline_check_the_late_install_breaks_the_window_invariant(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("simulations.fleet_sim.device.late", lambda args, now_ms: None)
    result, _ = run_fleet(load_scenario(_slow_site(tmp_path)))
    assert result["late_installs_refused"] == 0 and result["installs_outside_window"] >= 1

"""The rollout in virtual time: real rollout engines at the cloud and every gateway, signed site plans, outages."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from simulations.cli import sim
from simulations.rollout_sim import RolloutScenario, run_rollout_sim


@pytest.mark.parametrize("seed", [1, 2])
def test_a_staged_rollout_completes_under_outages_with_nothing_outside_a_window(seed):
    r = run_rollout_sim(RolloutScenario(seed=seed, sites=6, devices_per_site=25, outages_per_site_day=3.0))
    assert r["rollout_state"] == "completed", r["rollout_reason"]
    assert r["installs_outside_window"] == 0
    assert r["stuck_devices"] == 0
    assert r["devices_updated"] + r["devices_rolled_back"] + r["devices_failed"] == 150
    assert r["devices_rolled_back"] == r["bad_images"]  # every bad image rolled back, nothing else did
    assert r["link_outages"] > 0 and r["installs_while_offline"] > 0  # sites carried on cut off
    assert r["site_plans_refused"] == 1  # the forged plan


def test_same_seed_same_result_and_a_bad_fleet_halts():
    a = run_rollout_sim(RolloutScenario(seed=3, sites=3, devices_per_site=20))
    assert a == run_rollout_sim(RolloutScenario(seed=3, sites=3, devices_per_site=20))
    bad = run_rollout_sim(RolloutScenario(seed=3, sites=3, devices_per_site=20, bad_rate=0.5))
    assert bad["rollout_state"] == "paused" and bad["rollout_reason"].startswith("failure threshold")
    assert bad["devices_updated"] + bad["devices_rolled_back"] < 60  # later waves never started everywhere


def test_cli_prints_the_json_last_line():
    out = CliRunner().invoke(sim, ["rollout", "--sites", "3", "--devices-per-site", "10", "--seed", "2", "--json"])
    assert out.exit_code == 0, out.output
    last = json.loads(out.output.strip().splitlines()[-1])
    assert last["installs_outside_window"] == 0 and last["stuck_devices"] == 0 and last["virtual_seconds"] > 0

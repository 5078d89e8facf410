"""Rollouts with real processes: the cloud's rollout service, real gateways and agents, a real signed release."""

import pytest

from simulations.rollout_drill import run_rollout_drill

pytestmark = pytest.mark.integration


def test_a_bad_release_never_leaves_the_canary_and_every_canary_device_rolls_back(tmp_path):
    r = run_rollout_drill(tmp_path / "fleet", sites=2, devices_per_site=4, bad_release=True, quiet=True)
    assert r["rollout_state"] in ("paused", "aborted"), r["rollout_reason"]
    assert r["devices_updated"] == 0
    assert r["canary_size"] == 2 and r["devices_rolled_back"] == 2
    assert r["installs_outside_canary"] == 0
    assert r["installs_outside_window"] == 0
    assert r["telemetry_lost"] == 0 and r["clean_exits"] == r["processes"]


def test_a_release_rolls_to_two_sites_while_one_site_is_cut_off_in_the_middle(tmp_path):
    r = run_rollout_drill(tmp_path / "fleet", sites=2, devices_per_site=4, bad_release=False, quiet=True,
                          cut_uplink_s=6.0, window=False)
    assert r["uplink_cut_at"] in ("wave 1", "wave 2") and r["outage_seconds"] >= 6.0
    assert r["rollout_state"] == "completed", r["rollout_reason"]
    assert r["devices_updated"] == 8
    assert r["cut_site_caught_up"] > 0  # devices of the cut site the cloud saw updated only after the link came back
    assert r["telemetry_lost"] == 0 and r["clean_exits"] == r["processes"]

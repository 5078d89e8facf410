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


def test_a_site_cut_off_keeps_rolling_out_its_approved_stage_from_its_signed_plan(tmp_path):
    r = run_rollout_drill(tmp_path / "fleet", sites=2, devices_per_site=6, bad_release=False, quiet=True,
                          cut_uplink_s=8.0, window=False, site_autonomy=True, max_installing_per_site=1)
    assert r["site_autonomy"] and r["outage_seconds"] >= 8.0
    assert r["installs_while_cut"] > 0  # the cut site's gateway released installs on its own, from its plan
    assert r["converged_after_s"] is not None  # the cloud's view of the cut site came to match the gateway's
    assert r["rollout_state"] == "completed", r["rollout_reason"]
    assert r["devices_updated"] == 12
    assert r["gateways_prefetched"] == 2  # each gateway fetched the release on its plan, before any device asked
    assert r["site_cache_fetches"] == 2  # and the release crossed each site's uplink once
    assert r["telemetry_lost"] == 0 and r["clean_exits"] == r["processes"]

"""Real SWUpdate devices (Debian's swupdate, suricatta with the hawkBit server module) updated by a rollout
through a real gateway's DDI endpoint and site cache, beside real agents; and a .swu whose install fails,
reported to the rollout's gate. Skipped, naming the package, where swupdate is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real_tools import requires

pytestmark = [pytest.mark.integration, requires("swupdate")]


def test_one_rollout_updates_agents_and_swupdate_devices_through_the_site_cache(tmp_path: Path) -> None:
    from simulations.rollout_drill import run_rollout_drill

    r = run_rollout_drill(tmp_path, 1, 2, bad_release=False, quiet=True, ddi_devices=2)
    assert (r["ddi_devices_updated"], r["devices_updated"], r["wan_transfers"]) == (2, 4, 1), r
    assert r["rollout_state"] == "completed" and r["updates_as_expected"] and r["telemetry_lost"] == 0
    assert r["clean_exits"] == r["processes"]


def test_a_swu_whose_install_fails_is_reported_and_the_rollout_gate_stops_it(tmp_path: Path) -> None:
    from simulations.rollout_drill import run_rollout_drill

    r = run_rollout_drill(tmp_path, 1, 2, bad_release=True, quiet=True, ddi_devices=2)
    # the canary fails (agents roll back, a DDI device's install fails), the threshold pauses the rollout
    assert r["rollout_state"] in ("paused", "aborted") and r["devices_updated"] == 0, r
    assert r["devices_failed"] + r["devices_rolled_back"] == r["canary_size"] == 2
    assert r["installs_outside_canary"] == 0 and r["updates_as_expected"]

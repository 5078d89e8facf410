"""The virtual-time fleet: the real cores over a lossy in-memory network."""

import json
import subprocess
import sys

import pytest

from simulations.telemetry import TelemetryScenario, run_telemetry


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nothing_lost_nothing_stored_twice_over_lossy_links(seed):
    r = run_telemetry(TelemetryScenario(seed=seed, duration_s=60, loss=0.10))
    assert r["drained"] and r["frames_lost"] > 0
    assert r["telemetry_sent"] == 20 * 60 + 20  # 60 samples and one inventory report (state stream) per device
    assert r["telemetry_stored"] == r["telemetry_sent"]
    assert r["telemetry_lost"] == 0 and r["telemetry_duplicates_stored"] == 0
    assert r["duplicates_dropped"] > 0  # resends happened and the store absorbed them


def test_a_dead_link_shows_up_as_lost_not_as_success():
    # a network that loses everything: the counters must say so
    r = run_telemetry(TelemetryScenario(seed=4, duration_s=10, loss=1.0, drain_deadline_s=30))
    assert not r["drained"]
    assert r["telemetry_stored"] == 0 and r["telemetry_lost"] == r["telemetry_sent"] > 0


def test_same_seed_gives_byte_identical_output():
    cmd = [sys.executable, "-m", "simulations", "telemetry", "--seed", "7", "--json", "--duration", "30"]
    first = subprocess.run(cmd, capture_output=True, check=True).stdout
    second = subprocess.run(cmd, capture_output=True, check=True).stdout
    assert first == second
    assert json.loads(first.splitlines()[-1])["seed"] == 7
    other = subprocess.run([*cmd[:5], "8", *cmd[6:]], capture_output=True, check=True).stdout
    assert other != first

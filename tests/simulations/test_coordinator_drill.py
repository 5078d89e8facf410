"""The failover drill of issue 14 (``edgefleet demo --coordinators 2 --database ... --kill-coordinator 2 --rollout``),
smaller: two coordinators over a PostgreSQL database of its own, the leader SIGKILLed twice during a rollout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulations.rollout_drill import run_rollout_drill
from tests.postgres import fresh_database

@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url.replace("postgresql+psycopg://", "postgresql://", 1)  # as an operator writes it (the drill picks psycopg)


def test_killing_the_leader_twice_loses_nothing_and_the_rollout_completes(tmp_path, database: str) -> None:
    r = run_rollout_drill(tmp_path / "fleet", sites=2, devices_per_site=3, bad_release=False, quiet=True, window=False,
                          coordinators=2, database=database, kill_coordinator=2)
    assert r["coordinators_killed"] == 2 and r["coordinator_failovers"] == 2
    assert r["rollout_state"] == "completed", r["rollout_reason"]
    assert r["devices_updated"] == 6
    assert r["telemetry_lost"] == 0 and r["telemetry_duplicates_stored"] == 0
    assert r["telemetry_sent"] > 0
    assert 0 < r["max_ingest_pause_s"] < 10.0  # the goal of issue 14
    assert r["clean_exits"] == r["processes"]

"""``edgefleet cloud --database postgresql://...`` as a real process: a gateway and two agents' records stored by
the bulk path (COPY), their metrics folded by the follower into rollups, exactly once, and a prompt SIGTERM."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from simulations.fleet import ProcFleet
from tests.postgres import pg_unreachable
from tests.waits import until_true

pytestmark = pytest.mark.integration
SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def schema() -> Iterator[str]:
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pg_unreachable(f"PostgreSQL at {SERVER} is unreachable: {exc}")
    name = f"ef_cloud_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        admin.execute(f"DROP SCHEMA {name} CASCADE")
        admin.close()


def test_a_cloud_on_postgresql_stores_each_record_once_and_folds_its_metrics(tmp_path, schema: str) -> None:
    fleet = ProcFleet(tmp_path / "fleet", sample_interval_s=0.1)
    db = psycopg.connect(SERVER, options=f"-csearch_path={schema}", autocommit=True)

    def one(sql: str) -> tuple:
        return db.execute(sql).fetchone()

    try:
        fleet.start_cloud(["--database", f"{SERVER}?options=-csearch_path%3D{schema}"])
        fleet.start_gateway("gw-1", "site-1")
        for name in ("dev-1", "dev-2"):
            fleet.start_agent(name, "site-1", "gw-1")
        until_true(lambda: one("SELECT count(DISTINCT device_id) FROM telemetry WHERE kind = 'metrics'")[0] == 2,
                   "both agents' metrics stored in PostgreSQL")
        until_true(lambda: one("SELECT count(*) FROM metric_rollups WHERE width_ms = 60000")[0] > 0,
                   "the follower's minute rollups")
        fleet.stop(["dev-1", "dev-2"])
        # one statement, one snapshot: the follower commits its points with the deletion of its backlog entries
        sql = ("SELECT (SELECT count(*) FROM metric_backlog),"
               " (SELECT count(*) FROM telemetry t, jsonb_each(t.\"values\") j"
               "  WHERE t.kind = 'metrics' AND jsonb_typeof(j.value) = 'number'),"
               " (SELECT coalesce(sum(count), 0) FROM metric_rollups WHERE width_ms = 3600000)")
        # caught up: every numeric sample of every stored metrics record counted once in the hour rollups
        until_true(lambda: (lambda b, samples, counted: b == 0 and counted == samples > 0)(*one(sql)),
                   "the follower caught up with every stored sample, none counted twice")
        rows, distinct = one("SELECT count(*), count(DISTINCT (device_id, stream, seq)) FROM telemetry")
        assert rows == distinct > 0
        t0 = time.monotonic()
        fleet.signal("cloud", signal.SIGTERM)
        fleet.wait("cloud", timeout_s=15)
        assert time.monotonic() - t0 < 10
    finally:
        fleet.kill_all()
        db.close()

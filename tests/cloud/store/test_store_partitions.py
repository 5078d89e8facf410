"""Telemetry by day on PostgreSQL (``cloud.store.partitions``, migration 11) and telemetry retention on both
databases: partitions made ahead, old ones dropped whole, rows of the default partition moved or deleted, a
populated version-10 table migrated row for row, and each record still stored once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from cloud.store import MIGRATIONS, IngestResult, Store
from cloud.store.migrations import migrate
from cloud.store.partitions import DAY_MS, DEFAULT_PARTITION, partition_name, plan_partitions
from common.errors import StoreError
from common.protocol.messages import ForwardRecord
from tests.cloud.store.test_store import store_url  # noqa: F401  (SQLite and PostgreSQL)

TODAY = 20_429  # 2025-12-07
NOW = TODAY * DAY_MS + 3_600_000  # 01:00 UTC


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    yield s
    s.close()


def recs(device: str, seqs: range, ts_ms: int) -> list[ForwardRecord]:
    return [ForwardRecord(device, "bulk", q, ts_ms + q, "metrics", {"t": q}) for q in seqs]


def partitions_of(store: Store) -> dict[str, int]:
    """Each partition of telemetry and the rows it holds (pg_inherits, the catalogue's own word)."""
    with store.engine.connect() as conn:
        names = conn.exec_driver_sql("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                                     " WHERE i.inhparent = CAST('telemetry' AS regclass)").scalars().all()
        return {n: conn.exec_driver_sql(f"SELECT count(*) FROM {n}").scalar_one() for n in names}


def table_exists(store: Store, name: str) -> bool:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT to_regclass(%(n)s) IS NOT NULL", {"n": name}).scalar_one()


def stored_rows(store: Store) -> int:
    return store.telemetry.telemetry_summary()["rows"]


def test_plan_makes_today_and_the_days_ahead_and_drops_days_wholly_past_the_cutoff() -> None:
    plan = plan_partitions([TODAY - 10, TODAY - 9, TODAY - 3, TODAY, TODAY + 1], NOW, 9 * DAY_MS, ahead_days=3)
    # the cutoff is 01:00 of day -9: day -10 ended before it, day -9 still holds rows it keeps
    assert (plan.create, plan.drop, plan.cutoff_ms) == ((TODAY + 2, TODAY + 3), (TODAY - 10,), NOW - 9 * DAY_MS)
    assert plan_partitions([], NOW, None, ahead_days=1) == plan_partitions([], NOW, None, 1)
    assert plan_partitions([], NOW, None, ahead_days=1).create == (TODAY, TODAY + 1)
    assert plan_partitions([TODAY - 500], NOW, None, ahead_days=0).drop == ()  # None keeps everything
    assert partition_name(TODAY) == "telemetry_20251207"
    with pytest.raises(ValueError, match="positive"):
        plan_partitions([], NOW, 0, 3)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgres_telemetry_is_partitioned_and_day_partitions_are_made_ahead(store: Store) -> None:
    with store.engine.connect() as conn:
        kind = conn.exec_driver_sql("SELECT relkind FROM pg_class WHERE oid = CAST('telemetry' AS regclass)").scalar()
    assert kind == "p"
    assert partitions_of(store) == {DEFAULT_PARTITION: 0}
    assert store.partitions.maintain(NOW, None, ahead_days=3) == {"created": 4, "dropped": 0, "deleted": 0}
    assert store.partitions.days() == [TODAY, TODAY + 1, TODAY + 2, TODAY + 3]
    assert store.partitions.maintain(NOW + 3_600_000, None, ahead_days=3)["created"] == 0  # idempotent
    assert store.partitions.maintain(NOW + DAY_MS, None, ahead_days=3)["created"] == 1  # a day later: one more
    store.telemetry.ingest("gw-1", "s", recs("d1", range(1, 4), TODAY * DAY_MS + 5_000), NOW)
    assert partitions_of(store)[partition_name(TODAY)] == 3
    with store.engine.connect() as conn:  # the indexes other code needs are on every partition
        indexes = conn.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE tablename = %(t)s"
                                       " AND schemaname = current_schema()",
                                       {"t": partition_name(TODAY)}).scalars().all()
    assert sorted("received_ms" in i for i in indexes) == [False, True]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_rows_written_before_their_day_partition_move_into_it_and_stay_single(store: Store) -> None:
    day = TODAY * DAY_MS
    assert store.telemetry.ingest("gw-1", "s", recs("d1", range(1, 11), day), NOW).stored == 10
    assert store.telemetry.ingest("gw-1", "s", recs("d1", range(11, 13), 1_000), NOW).stored == 2  # a 1970 clock
    assert partitions_of(store) == {DEFAULT_PARTITION: 12}
    store.partitions.maintain(NOW, None, ahead_days=1)
    assert partitions_of(store) == {DEFAULT_PARTITION: 2, partition_name(TODAY): 10, partition_name(TODAY + 1): 0}
    # a resend after the move meets its first copy in the day partition, and in the default one
    assert store.telemetry.ingest("gw-2", "s", recs("d1", range(1, 13), day)[:10] + recs("d1", range(11, 13), 1_000),
                                  NOW) == IngestResult(stored=0, duplicates=12)
    assert stored_rows(store) == 12


def test_retention_drops_whole_day_partitions_and_deletes_older_rows_of_the_default(store: Store) -> None:
    postgres = store.engine.dialect.name == "postgresql"
    store.partitions.maintain((TODAY - 5) * DAY_MS, None, ahead_days=5)  # days -5..0 made ahead
    for back in (5, 4, 1, 0):
        store.telemetry.ingest("gw-1", "s", recs(f"d{back}", range(1, 6), (TODAY - back) * DAY_MS), NOW)
    store.telemetry.ingest("gw-1", "s", recs("clock", range(1, 4), 1_000), NOW)  # the default partition's rows
    store.telemetry.ingest("gw-1", "s", recs("future", range(1, 4), (TODAY + 400) * DAY_MS), NOW)
    assert stored_rows(store) == 26
    done = store.partitions.maintain(NOW, 2 * DAY_MS, ahead_days=1)  # keeps from 01:00 of day -2
    # days -5, -4 and -3 (empty) ended before the cutoff, day -2 did not; the 1970 clock's rows go by DELETE
    assert done == ({"created": 1, "dropped": 3, "deleted": 3} if postgres
                    else {"created": 0, "dropped": 0, "deleted": 13})
    assert sorted(d["device_id"] for d in store.telemetry.telemetry_summary()["devices"]) == ["d0", "d1", "future"]
    if postgres:
        assert not table_exists(store, partition_name(TODAY - 5)) and not table_exists(store, partition_name(TODAY - 3))
        assert partitions_of(store) == {DEFAULT_PARTITION: 3, partition_name(TODAY - 2): 0,
                                        partition_name(TODAY - 1): 5, partition_name(TODAY): 5,
                                        partition_name(TODAY + 1): 0}


def test_a_batch_resent_to_another_coordinator_is_stored_once(store_url: str) -> None:
    with Store.open(store_url) as one, Store.open(store_url) as two:
        one.partitions.maintain(NOW, None)
        batch = recs("d1", range(1, 101), TODAY * DAY_MS) + recs("d1", range(101, 111), 1_000)
        assert one.telemetry.ingest("gw-1", "s", batch, NOW).stored == 110
        assert two.telemetry.ingest("gw-1", "s", batch, NOW + 1) == IngestResult(stored=0, duplicates=110)
        summary = two.telemetry.telemetry_summary()
        assert (summary["rows"], summary["duplicates_stored"]) == (110, 0)


def test_migration_11_keeps_every_row_of_a_populated_version_10_table(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        assert migrate(conn, MIGRATIONS[:10]) == list(range(1, 11))
        conn.execute(sa.text("INSERT INTO sites VALUES ('s', 1, 2)"))
        conn.execute(sa.text("INSERT INTO gateways (gateway_id, site_id, first_seen_ms, last_seen_ms)"
                             " VALUES ('gw-1', 's', 1, 2)"))
        conn.execute(sa.text("INSERT INTO devices (device_id, site_id, gateway_id, first_seen_ms, last_seen_ms,"
                             " last_seq) VALUES ('d1', 's', 'gw-1', 1, 2, 3000)"))
        conn.execute(sa.text('INSERT INTO telemetry (device_id, stream, seq, ts_ms, kind, "values", received_ms,'
                             " ingest_id) VALUES ('d1', :s, :q, :t, 'metrics', '{\"t\": 1}', 5, :i)"),
                     [{"s": s, "q": q, "t": (TODAY - q % 3) * DAY_MS + q, "i": None if q % 2 else 10**9 + q}
                      for s in ("bulk", "critical") for q in range(1, 1501)])
        before = sorted(conn.execute(sa.text("SELECT * FROM telemetry")).all())
    engine.dispose()
    with Store.open(store_url) as store:
        assert store.applied_migrations == (11,)
        with store.engine.connect() as conn:
            assert sorted(conn.execute(sa.text(
                'SELECT device_id, seq, ts_ms, kind, "values", received_ms, stream, ingest_id FROM telemetry'
                if store.engine.dialect.name == "postgresql" else "SELECT * FROM telemetry")).all()) == before
        if store.engine.dialect.name == "postgresql":
            assert partitions_of(store) == {DEFAULT_PARTITION: 3000}
            store.partitions.maintain(NOW, None, ahead_days=0)  # today's rows move out of the default
            assert partitions_of(store) == {DEFAULT_PARTITION: 2000, partition_name(TODAY): 1000}
        assert store.telemetry.ingest("gw-1", "s", recs("d1", range(1, 2), (TODAY - 1) * DAY_MS), NOW).duplicates == 1
        assert stored_rows(store) == 3000


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_partitions_are_made_and_dropped_while_another_store_ingests(store_url: str) -> None:
    """A maintenance moving rows out of the default partition into new days, beside ingests into those very days,
    neither deadlocks, nor fails an ingest (an insert routed to the default just before an ATTACH), nor loses or
    doubles a row."""
    with Store.open(store_url) as ingesting, Store.open(store_url) as leader:
        leader.partitions.maintain((TODAY - 3) * DAY_MS, None, ahead_days=0)  # day -3 only
        done = threading.Event()
        errors: list[BaseException] = []

        def ingest() -> None:
            try:
                for i in range(60):  # a row for day -3 (dropped below), today, and one of the next 10 days
                    batch = [ForwardRecord(f"d{i}", "bulk", q, (TODAY + day) * DAY_MS + i, "metrics", {"t": i})
                             for q, day in ((1, -3), (2, 0), (3, 1 + i % 10))]
                    assert ingesting.telemetry.ingest("gw-1", "s", batch, NOW).stored == 3
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=ingest)
        worker.start()
        runs = 0
        while not done.is_set() or runs < 12:
            leader.partitions.maintain(NOW, None, ahead_days=min(runs, 11))  # one more day each run
            runs += 1
        worker.join()
        assert errors == []
        assert leader.partitions.maintain(NOW, 2 * DAY_MS, ahead_days=11)["dropped"] == 1  # day -3
        summary = leader.telemetry.telemetry_summary()
        assert (summary["rows"], summary["duplicates_stored"]) == (120, 0)
        counts = partitions_of(leader)
        assert partition_name(TODAY - 3) not in counts and counts[DEFAULT_PARTITION] == 0
        assert counts[partition_name(TODAY)] == 60 and counts[partition_name(TODAY + 1)] == 6


def test_the_follower_folds_rows_of_every_day_a_backlog_entry_spans_and_entries_without_times(store: Store) -> None:
    """The fold reads only the partitions of its entries' sample times (PostgreSQL): an entry spanning three
    weeks folds both ends; a rebuild's entries (no times) fold everything."""
    store.partitions.maintain((TODAY - 21) * DAY_MS, None, ahead_days=22)
    batch = [ForwardRecord("d1", "bulk", q, (TODAY - 20 * (q % 2)) * DAY_MS + q, "metrics", {"t": float(q)})
             for q in range(1, 11)] + recs("clock", range(1, 3), 1_000)  # and two rows of the default partition
    assert store.telemetry.ingest("gw-1", "s", batch, NOW).stored == 12
    assert store.metrics.follow_all() == 12
    raw = store.metrics.metric_series(["d1", "clock"], 0, NOW + DAY_MS, "raw")
    assert len(raw) == 12
    assert store.metrics.rebuild(NOW) == 2 and store.metrics.follow_all() == 12
    assert store.metrics.metric_series(["d1", "clock"], 0, NOW + DAY_MS, "raw") == raw


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_maintainer_whose_list_was_stale_makes_only_the_partitions_still_missing(store: Store,
                                                                                  store_url: str) -> None:
    with Store.open(store_url) as other:  # another coordinator starting beside this one
        assert other.partitions.maintain(NOW, None, ahead_days=3)["created"] == 4
    store.partitions.days = lambda: []  # type: ignore[method-assign]  # listed before the other made them
    assert store.partitions.maintain(NOW, None, ahead_days=3) == {"created": 0, "dropped": 0, "deleted": 0}


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
def test_a_coordinator_makes_the_day_partitions_at_start_and_a_failure_only_logs(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    from cloud.fleet.jobs import make_day_partitions

    make_day_partitions(store, 3, NOW)
    assert store.partitions.days() == ([TODAY, TODAY + 1, TODAY + 2, TODAY + 3]
                                       if store.engine.dialect.name == "postgresql" else [])

    def broken(*args: object) -> dict[str, int]:
        raise StoreError("telemetry partitions and retention: lock timeout")

    store.partitions.maintain = broken  # type: ignore[method-assign]
    make_day_partitions(store, 3, NOW)  # the leader's job makes them later
    assert "making telemetry's day partitions at start failed" in caplog.text

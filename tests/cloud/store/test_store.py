"""One contract suite for the cloud store, run against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

import cloud.store
from cloud.store import COMMAND_STATUSES, MIGRATIONS, IngestResult, Migration, Store
from cloud.store.batch import plan_batch, statuses_before, subtract_ranges
from cloud.store.migrations import migrate
from cloud.store.schema import metadata, schema_version, telemetry
from common.errors import StoreError
from common.protocol.messages import ForwardRecord
from tests.postgres import fresh_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL to an empty database: a file under tmp_path, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    with fresh_schema() as url:
        yield url


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], Store]]:
    """Open (and later close) stores on the one test database."""
    opened: list[Store] = []

    def open_() -> Store:
        opened.append(Store.open(store_url))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    return open_store()


def rec(device: str, seq: int, stream: str = "bulk", kind: str = "env", **values: float | str) -> ForwardRecord:
    return ForwardRecord(device, stream, seq, 1_000 + seq, kind, values or {"t": 20.5})


def gap(device: str, stream: str, first: int, last: int, *, reason: str = "quota", reporter: str = "gw-1",
        seq: int = 0, ts_ms: int = 5_000) -> ForwardRecord:
    """A gap report: seq 0 from a gateway, or seq > 0 in the device's critical stream from the device."""
    values = {"stream": stream, "reason": reason, "first": first, "last": last, "count": last - first + 1,
              "reporter": reporter}
    return ForwardRecord(device, "critical", seq, ts_ms, "gap", values)


def status(ts_ms: int, **values: float | str) -> ForwardRecord:
    return ForwardRecord("gw-1", "state", 0, ts_ms, "gateway.status", values)


def command_report(device: str, seq: int, status_: str, detail: str = "") -> ForwardRecord:
    return ForwardRecord(device, "critical", 0, 9_000, "command", {"seq": seq, "status": status_, "detail": detail})


def test_public_names_exist() -> None:
    assert sorted(cloud.store.__all__) == ["COMMAND_STATUSES", "Database", "IngestResult", "MIGRATIONS", "Migration", "Store"]
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


# -- migrations --------------------------------------------------------------------------


def test_migrations_apply_once_and_reopen_applies_nothing(open_store) -> None:
    first = open_store()
    assert first.applied_migrations == tuple(m.version for m in MIGRATIONS)
    first.close()
    second = open_store()
    assert second.applied_migrations == ()
    with second.engine.connect() as conn:
        versions = conn.execute(sa.select(schema_version.c.version).order_by(schema_version.c.version)).scalars()
        assert list(versions) == [m.version for m in MIGRATIONS]
    assert set(sa.inspect(second.engine).get_table_names()) >= {
        "schema_version", "sites", "gateways", "devices", "telemetry", "gaps", "commands"
    }
    assert_schema_is_current(second.engine)


def assert_schema_is_current(engine: sa.Engine) -> None:
    """The database's tables have schema.py's columns, nullability and primary keys."""
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name: c.nullable for c in table.c}, table.name
        key = {c.name for c in table.primary_key}
        if table.name == "telemetry" and engine.dialect.name == "postgresql":
            key.add("ts_ms")  # partitioned by ts_ms there (migration 11): the key holds the partition key
        assert set(inspector.get_pk_constraint(table.name)["constrained_columns"]) == key, table.name
    [unique] = inspector.get_unique_constraints("gaps")
    assert set(unique["column_names"]) == {"reporter", "device_id", "stream", "first_seq", "last_seq", "reason"}


def _at_version_1(url: str) -> sa.Engine:
    """The test database as EdgeFleet's first release left it, with a site, gateway, device and telemetry."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        assert migrate(conn, MIGRATIONS[:1]) == [1]
        conn.execute(sa.text("INSERT INTO sites VALUES ('site-a', 10, 20)"))
        conn.execute(sa.text("INSERT INTO gateways VALUES ('gw-1', 'site-a', 'KEY-1', 10, 20)"))
        conn.execute(sa.text("INSERT INTO devices VALUES ('d1', 'site-a', 'gw-1', 10, 20, 3)"))
        for seq in (1, 2, 3):
            conn.execute(
                sa.text("INSERT INTO telemetry VALUES ('d1', :seq, :ts, 'power', :values, 20)"),
                {"seq": seq, "ts": 100 + seq, "values": '{"v": 230.5}'},
            )
    return engine


def test_migration_2_upgrades_a_version_1_store_with_rows(store_url: str) -> None:
    _at_version_1(store_url).dispose()
    with Store.open(store_url) as store:
        assert store.applied_migrations == tuple(m.version for m in MIGRATIONS[1:])  # 2 and every later step
        assert_schema_is_current(store.engine)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(telemetry).order_by(telemetry.c.seq)).mappings().all()
            gateway = conn.execute(sa.text("SELECT public_key, status, status_ts_ms FROM gateways")).one()
        # the old ``stream`` ("power") is now the kind; every old row joined the bulk stream
        assert [dict(r) for r in rows] == [
            {"device_id": "d1", "stream": "bulk", "seq": s, "ts_ms": 100 + s, "kind": "power",
             "values": {"v": 230.5}, "received_ms": 20, "ingest_id": None}  # stored before the metrics follower
            for s in (1, 2, 3)
        ]
        assert tuple(gateway) == ("KEY-1", None, None)
        # the new key: an old row resent (with its sample time) is a duplicate in bulk, the same seq in critical
        # is a new record
        resent = ForwardRecord("d1", "bulk", 3, 103, "power", {"v": 230.5})
        assert store.telemetry.ingest("gw-1", "site-a", [resent, rec("d1", 3, "critical"), rec("d1", 4)], 30) == (
            IngestResult(stored=2, duplicates=1)
        )
        assert store.telemetry.list_devices()[0]["last_seq"] == 4
        store.commands.create_command("d1", "reboot", {}, expires_ms=1_000, now_ms=30)
        store.telemetry.ingest("gw-1", "site-a", [gap("d1", "bulk", 5, 6)], 40)
        assert store.telemetry.gaps()[0]["first_seq"] == 5
    with Store.open(store_url) as again:
        assert again.applied_migrations == ()
        assert again.telemetry.telemetry_summary()["rows"] == 5


def test_a_failed_upgrade_leaves_the_version_1_store_untouched(store_url: str, monkeypatch) -> None:
    def boom(conn: sa.Connection) -> None:
        conn.exec_driver_sql("SELECT no_such_column FROM telemetry")

    steps = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "a step that fails", boom))
    monkeypatch.setattr("cloud.store.database.migrate", lambda conn: migrate(conn, steps))
    _at_version_1(store_url).dispose()
    with pytest.raises(StoreError, match=f"migration {len(steps)} \\(a step that fails\\) failed"):
        Store.open(store_url)
    engine = sa.create_engine(store_url)
    try:
        inspector = sa.inspect(engine)
        assert {c["name"] for c in inspector.get_columns("telemetry")} == {
            "device_id", "seq", "ts_ms", "stream", "values", "received_ms"
        }
        assert not {"gaps", "commands", "telemetry_v2"} & set(inspector.get_table_names())
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM telemetry")).scalar() == 3
    finally:
        engine.dispose()


def test_store_newer_than_code_is_refused(open_store, store_url) -> None:
    s = open_store()
    with s.engine.begin() as conn:
        conn.execute(sa.insert(schema_version).values(version=999, description="from the future"))
    s.close()
    with pytest.raises(StoreError, match="version 999, newer than this EdgeFleet knows"):
        Store.open(store_url)


def test_data_survives_reopen(open_store) -> None:
    s = open_store()
    s.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=10)
    s.close()
    assert open_store().telemetry.telemetry_summary()["rows"] == 1


# -- ingest ------------------------------------------------------------------------------


def test_ingest_stores_each_record(store: Store) -> None:
    result = store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1), rec("d1", 2), rec("d2", 1)], now_ms=100)
    assert result == IngestResult(stored=3, duplicates=0)
    summary = store.telemetry.telemetry_summary()
    assert (summary["rows"], summary["distinct"], summary["duplicates_stored"]) == (3, 3, 0)


def test_resent_batch_is_all_duplicates(store: Store) -> None:
    batch = [rec("d1", s) for s in range(1, 6)]
    assert store.telemetry.ingest("gw-1", "site-a", batch, now_ms=100) == IngestResult(5, 0)
    assert store.telemetry.ingest("gw-1", "site-a", batch, now_ms=200) == IngestResult(0, 5)
    assert store.telemetry.telemetry_summary()["rows"] == 5


def test_partly_resent_batch_counts_only_the_new_records(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", s) for s in (1, 2, 3)], now_ms=100)
    result = store.telemetry.ingest("gw-1", "site-a", [rec("d1", s) for s in (2, 3, 4, 5)], now_ms=200)
    assert result == IngestResult(stored=2, duplicates=2)
    assert store.telemetry.telemetry_summary()["devices"] == [
        {"device_id": "d1", "stream": "bulk", "count": 5, "min_seq": 1, "max_seq": 5}
    ]


def test_repeats_within_one_batch_count_as_duplicates_and_the_first_wins(store: Store) -> None:
    batch = [rec("d1", 1, t=1.0), rec("d1", 1, t=2.0), rec("d1", 2), rec("d1", 1, t=3.0)]
    assert store.telemetry.ingest("gw-1", "site-a", batch, now_ms=100) == IngestResult(stored=2, duplicates=2)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(telemetry.c["values"]).where(telemetry.c.seq == 1)).scalar_one()
    assert stored == {"t": 1.0}


def test_same_seq_on_different_devices_is_not_a_duplicate(store: Store) -> None:
    assert store.telemetry.ingest("gw-1", "site-a", [rec("d1", 7), rec("d2", 7)], now_ms=1) == IngestResult(2, 0)


def test_each_stream_is_its_own_sequence_space(store: Store) -> None:
    batch = [rec("d1", 1, "critical"), rec("d1", 1, "state"), rec("d1", 1, "bulk"), rec("d1", 2, "bulk")]
    assert store.telemetry.ingest("gw-1", "site-a", batch, now_ms=1) == IngestResult(4, 0)
    again = [rec("d1", 1, "state"), rec("d1", 2, "critical"), rec("d1", 2, "bulk")]
    assert store.telemetry.ingest("gw-1", "site-a", again, now_ms=2) == IngestResult(stored=1, duplicates=2)
    summary = store.telemetry.telemetry_summary()
    assert (summary["rows"], summary["distinct"], summary["duplicates_stored"]) == (5, 5, 0)
    assert [(d["stream"], d["count"], d["max_seq"]) for d in summary["devices"]] == [
        ("bulk", 2, 2), ("critical", 2, 2), ("state", 1, 1)
    ]


def test_telemetry_row_holds_the_record(store: Store) -> None:
    record = ForwardRecord("d1", "state", 3, 1234, "power", {"v": 230.5, "a": 2, "unit": "V"})
    store.telemetry.ingest("gw-1", "site-a", [record], now_ms=99)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(telemetry)).mappings().one()
    assert dict(row) == {
        "device_id": "d1", "stream": "state", "seq": 3, "ts_ms": 1234, "kind": "power",
        "values": {"v": 230.5, "a": 2, "unit": "V"}, "received_ms": 99, "ingest_id": 1,  # its metric_backlog entry
    }


def test_records_the_store_cannot_use_are_refused_by_name_and_the_rest_is_committed(store: Store) -> None:
    batch = [
        rec("d1", 1),
        rec("d1", 2, "video"),  # no such stream
        ForwardRecord("d1", "bulk", -1, 1, "env", {}),
        ForwardRecord("d1", "bulk", 0, 1, "env", {}),  # seq 0 is only for reports
        ForwardRecord("d1", "critical", 0, 1, "gap", {"stream": "bulk", "reason": "quota"}),  # no range
        gap("d1", "bulk", 9, 3),
        command_report("d1", 1, "exploded"),
    ]
    result = store.telemetry.ingest("gw-1", "site-a", batch, now_ms=1)
    assert (result.stored, result.duplicates, result.gaps, result.reports) == (1, 0, 0, 4)
    assert len(result.rejected) == 6
    assert result.rejected[0] == (
        "record ('d1', 'video', seq 2) of kind 'env' refused: stream is not one of critical, state, bulk"
    )
    assert "values['first'] must be an integer >= 1, got None" in result.rejected[3]
    assert "gap range 9..3 is empty" in result.rejected[4]
    assert "command status 'exploded' is not one of" in result.rejected[5]
    assert store.telemetry.telemetry_summary()["rows"] == 1


def test_empty_batch_still_records_the_gateway(store: Store) -> None:
    assert store.telemetry.ingest("gw-1", "site-a", [], now_ms=50) == IngestResult(0, 0)
    assert [s["gateway_count"] for s in store.telemetry.list_sites()] == [1]


def test_ingest_of_a_20k_record_batch_stores_each_once(store: Store) -> None:
    # speed is a benchmark's business (docs/BENCHMARKS.md), never a test's
    batch = [rec(f"d{i % 100}", i // 100 + 1) for i in range(20_000)]
    assert store.telemetry.ingest("gw-1", "site-a", batch, now_ms=1) == IngestResult(20_000, 0)
    assert store.telemetry.ingest("gw-1", "site-a", batch[:500], now_ms=2) == IngestResult(0, 500)
    assert store.telemetry.telemetry_summary()["distinct"] == 20_000


# -- upserts -----------------------------------------------------------------------------


def test_devices_follow_the_newest_sighting_and_last_seq_only_grows(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 5), rec("d1", 3)], now_ms=100)
    store.telemetry.ingest("gw-2", "site-a", [rec("d1", 2)], now_ms=200)  # the device moved; an old record arrives late
    # a gateway of another site may not move it there (only an operator may): its record is refused
    assert store.telemetry.ingest("gw-3", "site-b", [rec("d1", 9)], now_ms=300).rejected
    [device] = store.telemetry.list_devices()
    assert device == {
        "device_id": "d1", "site_id": "site-a", "gateway_id": "gw-2",
        "first_seen_ms": 100, "last_seen_ms": 200, "last_seq": 5, "state": "active",
    }


def test_last_seen_never_goes_back(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=500)
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 2)], now_ms=400)
    [device] = store.telemetry.list_devices()
    [site] = store.telemetry.list_sites()
    assert (device["last_seen_ms"], device["last_seq"], site["last_seen_ms"]) == (500, 2, 500)


def test_touch_gateway_creates_keeps_and_replaces_the_key(store: Store) -> None:
    store.telemetry.touch_gateway("gw-1", "site-a", now_ms=10, public_key="KEY-1")
    store.telemetry.touch_gateway("gw-1", "site-a", now_ms=20)  # no key given: the stored one stays
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT public_key, first_seen_ms, last_seen_ms FROM gateways")).one()
    assert tuple(row) == ("KEY-1", 10, 20)
    store.telemetry.touch_gateway("gw-1", "site-a", now_ms=30, public_key="KEY-2")
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT public_key FROM gateways")).scalar_one() == "KEY-2"


def test_ingest_keeps_the_gateway_key(store: Store) -> None:
    store.telemetry.touch_gateway("gw-1", "site-a", now_ms=10, public_key="KEY-1")
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=20)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT public_key FROM gateways")).scalar_one() == "KEY-1"


def test_list_sites_counts_gateways_and_devices(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1), rec("d2", 1)], now_ms=100)
    store.telemetry.ingest("gw-2", "site-a", [rec("d3", 1)], now_ms=150)
    store.telemetry.touch_gateway("gw-3", "site-b", now_ms=300)
    assert store.telemetry.list_sites() == [
        {"site_id": "site-a", "first_seen_ms": 100, "last_seen_ms": 150, "gateway_count": 2, "device_count": 3,
         "links": {}},
        {"site_id": "site-b", "first_seen_ms": 300, "last_seen_ms": 300, "gateway_count": 1, "device_count": 0,
         "links": {}},
    ]


def test_summary_of_an_empty_store(store: Store) -> None:
    assert store.telemetry.telemetry_summary() == {"rows": 0, "distinct": 0, "duplicates_stored": 0, "devices": []}


def test_summary_per_device(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d2", s) for s in (4, 5, 6)] + [rec("d1", 1)], now_ms=1)
    summary = store.telemetry.telemetry_summary()
    assert summary == {
        "rows": 4,
        "distinct": 4,
        "duplicates_stored": 0,
        "devices": [
            {"device_id": "d1", "stream": "bulk", "count": 1, "min_seq": 1, "max_seq": 1},
            {"device_id": "d2", "stream": "bulk", "count": 3, "min_seq": 4, "max_seq": 6},
        ],
    }


# -- gaps --------------------------------------------------------------------------------


def test_gap_reports_are_recorded_once_however_often_they_arrive(store: Store) -> None:
    batch = [
        gap("d1", "bulk", 4, 5, reason="quota"),  # from the gateway: seq 0, only a gap
        gap("d1", "bulk", 4, 5, reason="ttl"),  # same range, another reason: its own row
        gap("d1", "state", 7, 7, reason="quota", reporter="d1", seq=1),  # the device's own: also telemetry
    ]
    assert store.telemetry.ingest("gw-1", "site-a", batch, now_ms=100) == IngestResult(
        stored=1, duplicates=0, gaps=3, reports=2
    )
    assert store.telemetry.ingest("gw-1", "site-a", batch + batch, now_ms=200) == IngestResult(
        stored=0, duplicates=2, gaps=0, reports=4
    )
    rows = store.telemetry.gaps()
    assert [(g["reporter"], g["stream"], g["first_seq"], g["last_seq"], g["reason"], g["count"]) for g in rows] == [
        ("gw-1", "bulk", 4, 5, "quota", 2),
        ("gw-1", "bulk", 4, 5, "ttl", 2),
        ("d1", "state", 7, 7, "quota", 1),
    ]
    assert rows[0] == {
        "reporter": "gw-1", "device_id": "d1", "stream": "bulk", "first_seq": 4, "last_seq": 5, "reason": "quota",
        "count": 2, "ts_ms": 5_000, "received_ms": 100,
    }
    # the device's own report is in its critical stream; the gateway's reports are never telemetry
    assert [(d["stream"], d["count"]) for d in store.telemetry.telemetry_summary()["devices"]] == [("critical", 1)]


def test_a_device_known_only_from_a_gap_report_is_registered_but_not_seen(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=100)
    store.telemetry.ingest("gw-1", "site-a", [gap("d1", "bulk", 2, 9), gap("d9", "bulk", 1, 50)], now_ms=500)
    assert [(d["device_id"], d["last_seen_ms"], d["last_seq"]) for d in store.telemetry.list_devices()] == [
        ("d1", 100, 1),
        ("d9", 500, 0),
    ]


def test_a_record_reported_dropped_that_arrived_anyway_is_not_counted_lost(store: Store) -> None:
    # a gateway evicted records it had forwarded before its acknowledgement was lost
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 4), rec("d1", 5)], now_ms=1)
    store.telemetry.ingest("gw-1", "site-a", [gap("d1", "bulk", 3, 6)], now_ms=2)
    [total] = store.telemetry.gap_totals("d1")
    assert (total["reported"], total["count"]) == (4, 2)


def test_gap_totals_and_filters(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [gap("d1", "bulk", 1, 10), gap("d1", "bulk", 20, 24), gap("d1", "state", 3, 3,
                 reason="ttl")], now_ms=1)
    store.telemetry.ingest("gw-2", "site-b", [gap("d2", "bulk", 1, 2, reporter="gw-2")], now_ms=2)
    assert store.telemetry.gap_totals() == [
        {"device_id": "d1", "stream": "bulk", "reason": "quota", "ranges": 2, "reported": 15, "count": 15},
        {"device_id": "d1", "stream": "state", "reason": "ttl", "ranges": 1, "reported": 1, "count": 1},
        {"device_id": "d2", "stream": "bulk", "reason": "quota", "ranges": 1, "reported": 2, "count": 2},
    ]
    assert [t["device_id"] for t in store.telemetry.gap_totals(site="site-b")] == ["d2"]
    assert [t["stream"] for t in store.telemetry.gap_totals(device_id="d1")] == ["bulk", "state"]
    assert [g["device_id"] for g in store.telemetry.gaps(site="site-a")] == ["d1", "d1", "d1"]
    assert [g["first_seq"] for g in store.telemetry.gaps(device_id="d1", site="site-a")] == [1, 20, 3]
    assert store.telemetry.gaps(device_id="d2", site="site-a") == []
    assert store.telemetry.gaps(device_id="nobody") == []


def test_missing_ranges_are_the_holes_no_gap_report_explains(store: Store) -> None:
    stored = [1, 2, 3, 7, 8, 12, 20]
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", s) for s in stored], now_ms=1)
    assert store.telemetry.missing_ranges("d1", "bulk") == [(4, 6), (9, 11), (13, 19)]
    store.telemetry.ingest(
        "gw-1", "site-a",
        [gap("d1", "bulk", 4, 6), gap("d1", "bulk", 10, 10, reporter="d1", seq=1), gap("d1", "bulk", 14, 15),
         gap("d1", "bulk", 15, 16, reason="ttl"), gap("d1", "state", 17, 19)],
        now_ms=2,
    )
    assert store.telemetry.missing_ranges("d1", "bulk") == [(9, 9), (11, 11), (13, 13), (17, 19)]
    assert store.telemetry.missing_ranges("d1", "critical") == []  # only the gap report itself: nothing missing
    assert store.telemetry.missing_ranges("nobody", "bulk") == []


def test_missing_ranges_over_100k_rows(store: Store) -> None:
    holes = {5_000, 5_001, 50_000, 99_999}
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1), rec("d2", 1), rec("d2", 100_000)], now_ms=1)  # d2 beside it
    row = {"device_id": "d1", "stream": "bulk", "ts_ms": 1, "kind": "env", "values": {}, "received_ms": 1}
    with store.engine.begin() as conn:  # straight in: the test is about reading them
        conn.execute(sa.insert(telemetry), [row | {"seq": s} for s in range(2, 100_001) if s not in holes])
    store.telemetry.ingest("gw-1", "site-a", [gap("d1", "bulk", 50_000, 50_000)], now_ms=2)
    assert store.telemetry.missing_ranges("d1", "bulk") == [(5_000, 5_001), (99_999, 99_999)]


def test_subtract_ranges() -> None:
    assert subtract_ranges([], [(1, 5)]) == []
    assert subtract_ranges([(1, 10)], []) == [(1, 10)]
    assert subtract_ranges([(1, 10)], [(3, 4), (4, 6), (9, 20)]) == [(1, 2), (7, 8)]
    assert subtract_ranges([(1, 2), (5, 6), (9, 12)], [(2, 9)]) == [(1, 1), (10, 12)]
    assert subtract_ranges([(5, 6)], [(1, 4), (7, 9)]) == [(5, 6)]
    assert subtract_ranges([(5, 6)], [(1, 100)]) == []


def test_plan_batch_takes_whole_floats_as_integers_and_the_newest_status() -> None:
    report = ForwardRecord("d1", "critical", 0, 1, "gap", {"stream": "bulk", "reason": "quota", "first": 3.0,
                                                          "last": 4.0, "count": 2.0, "reporter": "gw-1"})
    plan = plan_batch([report, status(30, link="down"), status(50, link="up"), status(40, link="x")], now_ms=9)
    assert [(g["first_seq"], g["last_seq"], g["count"]) for g in plan.gaps.values()] == [(3, 4, 2)]
    assert plan.status == (50, {"link": "up"})
    assert (plan.reports, plan.rejected) == (4, [])


# -- gateway status ----------------------------------------------------------------------


def test_gateway_status_newest_wins_and_shows_in_sites(store: Store) -> None:
    assert store.telemetry.ingest("gw-1", "site-a", [status(2_000, link="up", **{"backlog.bulk": 12})], now_ms=10) == (
        IngestResult(stored=0, duplicates=0, gaps=0, reports=1)
    )
    store.telemetry.ingest("gw-1", "site-a", [status(1_000, link="down")], now_ms=20)  # older: ignored
    store.telemetry.touch_gateway("gw-2", "site-a", now_ms=20)  # no status yet
    [site] = store.telemetry.list_sites()
    assert site["links"] == {"gw-1": "up"}
    detail = store.telemetry.site_detail("site-a", now_ms=30)
    assert [(g["gateway_id"], g["status"], g["status_ts_ms"]) for g in detail["gateways"]] == [
        ("gw-1", {"link": "up", "backlog.bulk": 12}, 2_000),
        ("gw-2", None, None),
    ]
    store.telemetry.ingest("gw-1", "site-a", [status(3_000, link="down")], now_ms=40)
    assert store.telemetry.list_sites()[0]["links"] == {"gw-1": "down"}
    assert store.telemetry.telemetry_summary()["rows"] == 0


def test_site_detail(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1), rec("d2", 1)], now_ms=1_000)
    store.telemetry.ingest("gw-2", "site-a", [rec("d3", 1), gap("d3", "bulk", 2, 4, reporter="gw-2")], now_ms=400_000)
    store.telemetry.ingest("gw-9", "site-b", [rec("d9", 1), gap("d9", "bulk", 2, 4, reporter="gw-9")], now_ms=400_000)
    detail = store.telemetry.site_detail("site-a", now_ms=500_000)
    assert detail == {
        "site_id": "site-a",
        "first_seen_ms": 1_000,
        "last_seen_ms": 400_000,
        "gateways": [
            {"gateway_id": "gw-1", "first_seen_ms": 1_000, "last_seen_ms": 1_000, "status": None,
             "status_ts_ms": None, "devices": 2},
            {"gateway_id": "gw-2", "first_seen_ms": 400_000, "last_seen_ms": 400_000, "status": None,
             "status_ts_ms": None, "devices": 1},
        ],
        "devices": {"total": 3, "online": 1, "online_within_ms": 300_000},
        "gap_totals": [{"device_id": "d3", "stream": "bulk", "reason": "quota", "ranges": 1, "reported": 3, "count": 3}],
    }
    assert store.telemetry.site_detail("site-a")["devices"]["online"] is None
    assert store.telemetry.site_detail("nowhere", now_ms=1) is None


# -- commands ----------------------------------------------------------------------------


def test_commands_are_numbered_per_device_and_need_a_known_device(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1), rec("d2", 1)], now_ms=1)
    assert [store.commands.create_command("d1", "reboot", {}, 5_000, 10) for _ in range(3)] == [1, 2, 3]
    assert store.commands.create_command("d2", "set", {"rate": "5"}, 6_000, 20) == 1
    with pytest.raises(StoreError, match="creating command 'reboot' for device 'd404' failed on .*no device by the id"):
        store.commands.create_command("d404", "reboot", {}, 5_000, 10)
    assert store.commands.list_commands("d2") == [
        {"device_id": "d2", "seq": 1, "name": "set", "args": {"rate": "5"}, "created_ms": 20, "expires_ms": 6_000,
         "status": "queued", "detail": "", "updated_ms": 20}
    ]
    assert store.commands.list_commands("d404") == []
    assert (store.telemetry.device_gateway("d1"), store.telemetry.device_gateway("d404")) == ("gw-1", None)


def test_command_lifecycle_only_moves_forward(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=1)
    seq = store.commands.create_command("d1", "reboot", {}, 5_000, 10)
    assert store.commands.mark_command("d1", seq, "held", "", 20)
    assert not store.commands.mark_command("d1", seq, "held", "again", 21)  # already there
    assert not store.commands.mark_command("d1", seq, "queued", "", 22)  # never back
    result = store.telemetry.ingest("gw-1", "site-a", [command_report("d1", seq, "delivered")], now_ms=30)
    assert (result.reports, result.rejected) == (1, ())
    assert not store.commands.mark_command("d1", seq, "held", "a late ack", 35)  # "delivered" stays
    store.telemetry.ingest("gw-1", "site-a", [command_report("d1", seq, "done", "rebooted in 4s")], now_ms=40)
    # done is final: a late "delivered", a second outcome and the cloud's expiry all leave it
    store.telemetry.ingest("gw-1", "site-a", [command_report("d1", seq, "delivered"), command_report("d1", seq, "failed")], 50)
    assert not store.commands.mark_command("d1", seq, "expired", "", 60)
    [cmd] = store.commands.list_commands("d1")
    assert (cmd["status"], cmd["detail"], cmd["updated_ms"]) == ("done", "rebooted in 4s", 40)
    assert not store.commands.mark_command("d1", 99, "held", "", 70)  # unknown command
    with pytest.raises(ValueError, match="unknown command status 'lost'"):
        store.commands.mark_command("d1", seq, "lost", "", 80)


def test_a_report_on_an_unknown_command_is_refused_by_name(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=1)
    result = store.telemetry.ingest("gw-1", "site-a", [command_report("d1", 7, "done")], now_ms=2)
    assert result.rejected == ("command report 'done' refused: device 'd1' has no command 7",)


def test_commands_for_and_expiry(store: Store) -> None:
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1), rec("d2", 1), rec("d3", 1)], now_ms=1)
    store.commands.create_command("d1", "a", {}, 1_000, 10)
    store.commands.create_command("d1", "b", {}, 9_000, 10)
    store.commands.create_command("d2", "c", {}, 1_000, 10)
    store.commands.create_command("d3", "d", {}, 1_000, 10)
    store.commands.mark_command("d2", 1, "held", "", 20)
    assert [(c["device_id"], c["seq"]) for c in store.commands.commands_for(["d2", "d1"])] == [("d1", 1), ("d1", 2)]
    assert [(c["device_id"], c["status"]) for c in store.commands.commands_for(["d1", "d2"], ("held", "delivered"))] == [
        ("d2", "held")
    ]
    assert store.commands.commands_for([]) == []
    assert [(c["device_id"], c["seq"]) for c in store.commands.commands_for_gateway("gw-1")] == [("d1", 1), ("d1", 2), ("d3", 1)]
    assert store.commands.commands_for_gateway("gw-9") == []
    assert store.commands.commands_for([f"x{i}" for i in range(1_200)] + ["d3"]) == store.commands.list_commands("d3")
    # only queued commands expire in the cloud: a held one is its gateway's to expire and report
    assert store.commands.expire_commands(now_ms=2_000) == [("d1", 1), ("d3", 1)]
    assert store.commands.expire_commands(now_ms=2_000) == []
    assert [c["status"] for c in store.commands.list_commands("d1")] == ["expired", "queued"]
    assert store.commands.list_commands("d2")[0]["status"] == "held"


def test_concurrent_command_creation_never_reuses_a_number(open_store) -> None:
    first = open_store()
    first.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=1)
    stores = [first] + [open_store() for _ in range(3)]  # separate engines, as separate processes would have
    made: list[int] = []
    lock = threading.Lock()

    def create(s: Store) -> None:
        for _ in range(10):
            seq = s.commands.create_command("d1", "ping", {}, 9_000, 2)
            with lock:
                made.append(seq)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == list(range(1, 41))
    assert [c["seq"] for c in first.commands.list_commands("d1")] == list(range(1, 41))


def test_command_statuses_rank_forward() -> None:
    assert COMMAND_STATUSES == ("queued", "held", "delivered", "done", "failed", "expired")
    assert statuses_before("queued") == ()
    assert statuses_before("delivered") == ("queued", "held")
    assert statuses_before("expired") == ("queued", "held", "delivered")


# -- errors ------------------------------------------------------------------------------


def test_closed_store_refuses_calls(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="listing devices failed .*closed"):
        store.telemetry.list_devices()


def test_failed_ingest_rolls_back_everything(store: Store) -> None:
    # the last record breaks a NOT NULL constraint after the site, gateway and devices were upserted
    bad = ForwardRecord("d9", "bulk", 2, None, "env", {})  # type: ignore[arg-type]
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=100)
    with pytest.raises(StoreError, match=r"(?i)ingest of 2 records from gateway 'gw-9' failed on .*: \w+: .*not.null"):
        store.telemetry.ingest("gw-9", "site-z", [rec("d9", 9), bad], now_ms=200)
    assert [s["site_id"] for s in store.telemetry.list_sites()] == ["site-a"]
    assert [(d["device_id"], d["last_seq"]) for d in store.telemetry.list_devices()] == [("d1", 1)]
    assert store.telemetry.telemetry_summary()["rows"] == 1


def test_unusable_urls_raise_store_error(tmp_path) -> None:
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        Store.open("mysql://root@localhost/x")
    with pytest.raises(StoreError, match="cannot be used"):
        Store.open("not a url")
    with pytest.raises(StoreError, match="store open failed on sqlite:///.*missing.*unable to open"):
        Store.open(f"sqlite:///{tmp_path / 'missing' / 'cloud.db'}")


def test_unreachable_postgres_names_the_server_and_hides_the_password() -> None:
    with pytest.raises(StoreError, match=r"store open failed on postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x") as info:
        Store.open("postgresql+psycopg://u:secret@127.0.0.1:1/x?connect_timeout=2")
    assert "secret" not in str(info.value)


# -- alerts and silences -------------------------------------------------------------------


def _alert(alert_id: str, state: str = "open", last_event: str = "fired", at: int = 100) -> dict:
    return {"id": alert_id, "rule": "device_offline", "type": "offline", "subject": alert_id.split(":")[1],
            "severity": "warning", "state": state, "opened_ms": 100, "resolved_ms": at if state == "resolved" else None,
            "last_event": last_event, "last_event_ms": at, "detail": {"silent_s": 12.5}}


def test_alerts_upsert_list_ack_and_never_reopen(store: Store) -> None:
    store.alerts.save_alerts([_alert("device_offline:d1:100"), _alert("device_offline:d2:100", last_event="silenced")])
    assert [a["id"] for a in store.alerts.list_alerts("open")] == ["device_offline:d1:100", "device_offline:d2:100"]
    assert store.alerts.ack_alert("device_offline:d1:100", "alice", 150)["acked_by"] == "alice"
    store.alerts.save_alerts([_alert("device_offline:d1:100", "resolved", "resolved", 200)])
    [done] = store.alerts.list_alerts("resolved")
    assert (done["id"], done["resolved_ms"], done["acked_by"], done["detail"]) == (
        "device_offline:d1:100", 200, "alice", {"silent_s": 12.5}
    )
    store.alerts.save_alerts([_alert("device_offline:d1:100", at=300)])  # an "open" after "resolved" changes nothing
    assert store.alerts.get_alert("device_offline:d1:100")["state"] == "resolved"
    assert len(store.alerts.list_alerts("all")) == 2 and store.alerts.list_alerts("all", subject="d2")[0]["subject"] == "d2"
    assert store.alerts.ack_alert("nope", "bob", 1) is None and store.alerts.get_alert("nope") is None
    with pytest.raises(ValueError):
        store.alerts.list_alerts("closed")


def test_silences_and_devices_in_maintenance(store: Store) -> None:
    store.alerts.add_silence("gw-1", 1_000, "alice", "", 10)
    store.alerts.add_silence("battery_low", 5_000, "bob", "swap day", 10)
    assert [s["target"] for s in store.alerts.active_silences(999)] == ["battery_low", "gw-1"]
    assert [s["target"] for s in store.alerts.active_silences(1_000)] == ["battery_low"]
    store.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], 10)
    assert store.fleet.devices_in_state("maintenance") == []  # no lifecycle states in this schema


def test_the_database_and_its_wal_are_private_to_the_cloud(tmp_path) -> None:
    """cloud.db, its WAL and shared memory are 0600, also for a file made 0644 before (issue 15, point 9)."""
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    old.chmod(0o644)
    for path in (tmp_path / "cloud.db", old):
        s = Store.open(f"sqlite:///{path}")
        try:
            s.telemetry.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=1)
            made = [p for p in tmp_path.iterdir() if p.name.startswith(path.name)]
            assert {p.name for p in made} >= {path.name}
            assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == {p.name: "0o600" for p in made}
        finally:
            s.close()

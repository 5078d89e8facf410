"""One contract suite for the cloud store, run against SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

import cloud.store
from cloud.store import MIGRATIONS, IngestResult, Store
from cloud.store.schema import schema_version, telemetry
from common.errors import StoreError
from common.protocol.messages import ForwardRecord

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_admin() -> sa.Engine:
    return sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL to an empty database: a file under tmp_path, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_SERVER} is unreachable: {exc.orig}")
    schema = f"ef_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_SERVER}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


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


def rec(device: str, seq: int, stream: str = "env", **values: float) -> ForwardRecord:
    return ForwardRecord(device_id=device, seq=seq, ts_ms=1_000 + seq, stream=stream, values=values or {"t": 20.5})


def test_public_names_exist() -> None:
    assert sorted(cloud.store.__all__) == ["IngestResult", "MIGRATIONS", "Migration", "Store"]
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
        "schema_version", "sites", "gateways", "devices", "telemetry"
    }


def test_store_newer_than_code_is_refused(open_store, store_url) -> None:
    s = open_store()
    with s.engine.begin() as conn:
        conn.execute(sa.insert(schema_version).values(version=999, description="from the future"))
    s.close()
    with pytest.raises(StoreError, match="version 999, newer than this EdgeFleet knows"):
        Store.open(store_url)


def test_data_survives_reopen(open_store) -> None:
    s = open_store()
    s.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=10)
    s.close()
    assert open_store().telemetry_summary()["rows"] == 1


# -- ingest ------------------------------------------------------------------------------


def test_ingest_stores_each_record(store: Store) -> None:
    result = store.ingest("gw-1", "site-a", [rec("d1", 1), rec("d1", 2), rec("d2", 1)], now_ms=100)
    assert result == IngestResult(stored=3, duplicates=0)
    summary = store.telemetry_summary()
    assert (summary["rows"], summary["distinct"], summary["duplicates_stored"]) == (3, 3, 0)


def test_resent_batch_is_all_duplicates(store: Store) -> None:
    batch = [rec("d1", s) for s in range(1, 6)]
    assert store.ingest("gw-1", "site-a", batch, now_ms=100) == IngestResult(5, 0)
    assert store.ingest("gw-1", "site-a", batch, now_ms=200) == IngestResult(0, 5)
    assert store.telemetry_summary()["rows"] == 5


def test_partly_resent_batch_counts_only_the_new_records(store: Store) -> None:
    store.ingest("gw-1", "site-a", [rec("d1", s) for s in (1, 2, 3)], now_ms=100)
    result = store.ingest("gw-1", "site-a", [rec("d1", s) for s in (2, 3, 4, 5)], now_ms=200)
    assert result == IngestResult(stored=2, duplicates=2)
    assert store.telemetry_summary()["devices"] == [{"device_id": "d1", "count": 5, "min_seq": 1, "max_seq": 5}]


def test_repeats_within_one_batch_count_as_duplicates_and_the_first_wins(store: Store) -> None:
    batch = [rec("d1", 1, t=1.0), rec("d1", 1, t=2.0), rec("d1", 2), rec("d1", 1, t=3.0)]
    assert store.ingest("gw-1", "site-a", batch, now_ms=100) == IngestResult(stored=2, duplicates=2)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(telemetry.c["values"]).where(telemetry.c.seq == 1)).scalar_one()
    assert stored == {"t": 1.0}


def test_same_seq_on_different_devices_is_not_a_duplicate(store: Store) -> None:
    assert store.ingest("gw-1", "site-a", [rec("d1", 7), rec("d2", 7)], now_ms=1) == IngestResult(2, 0)


def test_telemetry_row_holds_the_record(store: Store) -> None:
    store.ingest("gw-1", "site-a", [ForwardRecord("d1", 3, 1234, "power", {"v": 230.5, "a": 2})], now_ms=99)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(telemetry)).mappings().one()
    assert dict(row) == {
        "device_id": "d1", "seq": 3, "ts_ms": 1234, "stream": "power", "values": {"v": 230.5, "a": 2}, "received_ms": 99
    }


def test_empty_batch_still_records_the_gateway(store: Store) -> None:
    assert store.ingest("gw-1", "site-a", [], now_ms=50) == IngestResult(0, 0)
    assert [s["gateway_count"] for s in store.list_sites()] == [1]


def test_ingest_of_20k_records_takes_well_under_a_second(store: Store) -> None:
    batch = [rec(f"d{i % 100}", i // 100 + 1) for i in range(20_000)]
    started = time.perf_counter()
    assert store.ingest("gw-1", "site-a", batch, now_ms=1) == IngestResult(20_000, 0)
    elapsed = time.perf_counter() - started
    limit = 1.0 if store.engine.dialect.name == "sqlite" else 3.0  # the brief's budget is SQLite's
    assert elapsed < limit, f"20k records took {elapsed:.2f}s"


# -- upserts -----------------------------------------------------------------------------


def test_devices_follow_the_newest_sighting_and_last_seq_only_grows(store: Store) -> None:
    store.ingest("gw-1", "site-a", [rec("d1", 5), rec("d1", 3)], now_ms=100)
    store.ingest("gw-2", "site-b", [rec("d1", 2)], now_ms=200)  # the device moved; an old record arrives late
    [device] = store.list_devices()
    assert device == {
        "device_id": "d1", "site_id": "site-b", "gateway_id": "gw-2",
        "first_seen_ms": 100, "last_seen_ms": 200, "last_seq": 5,
    }


def test_last_seen_never_goes_back(store: Store) -> None:
    store.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=500)
    store.ingest("gw-1", "site-a", [rec("d1", 2)], now_ms=400)
    [device] = store.list_devices()
    [site] = store.list_sites()
    assert (device["last_seen_ms"], device["last_seq"], site["last_seen_ms"]) == (500, 2, 500)


def test_touch_gateway_creates_keeps_and_replaces_the_key(store: Store) -> None:
    store.touch_gateway("gw-1", "site-a", now_ms=10, public_key="KEY-1")
    store.touch_gateway("gw-1", "site-a", now_ms=20)  # no key given: the stored one stays
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT public_key, first_seen_ms, last_seen_ms FROM gateways")).one()
    assert tuple(row) == ("KEY-1", 10, 20)
    store.touch_gateway("gw-1", "site-a", now_ms=30, public_key="KEY-2")
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT public_key FROM gateways")).scalar_one() == "KEY-2"


def test_ingest_keeps_the_gateway_key(store: Store) -> None:
    store.touch_gateway("gw-1", "site-a", now_ms=10, public_key="KEY-1")
    store.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=20)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT public_key FROM gateways")).scalar_one() == "KEY-1"


def test_list_sites_counts_gateways_and_devices(store: Store) -> None:
    store.ingest("gw-1", "site-a", [rec("d1", 1), rec("d2", 1)], now_ms=100)
    store.ingest("gw-2", "site-a", [rec("d3", 1)], now_ms=150)
    store.touch_gateway("gw-3", "site-b", now_ms=300)
    assert store.list_sites() == [
        {"site_id": "site-a", "first_seen_ms": 100, "last_seen_ms": 150, "gateway_count": 2, "device_count": 3},
        {"site_id": "site-b", "first_seen_ms": 300, "last_seen_ms": 300, "gateway_count": 1, "device_count": 0},
    ]


def test_summary_of_an_empty_store(store: Store) -> None:
    assert store.telemetry_summary() == {"rows": 0, "distinct": 0, "duplicates_stored": 0, "devices": []}


def test_summary_per_device(store: Store) -> None:
    store.ingest("gw-1", "site-a", [rec("d2", s) for s in (4, 5, 6)] + [rec("d1", 1)], now_ms=1)
    summary = store.telemetry_summary()
    assert summary == {
        "rows": 4,
        "distinct": 4,
        "duplicates_stored": 0,
        "devices": [
            {"device_id": "d1", "count": 1, "min_seq": 1, "max_seq": 1},
            {"device_id": "d2", "count": 3, "min_seq": 4, "max_seq": 6},
        ],
    }


# -- errors ------------------------------------------------------------------------------


def test_closed_store_refuses_calls(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="listing devices failed .*closed"):
        store.list_devices()


def test_failed_ingest_rolls_back_everything(store: Store) -> None:
    # the last record breaks a NOT NULL constraint after the site, gateway and devices were upserted
    bad = ForwardRecord("d1", 2, None, "env", {})  # type: ignore[arg-type]
    store.ingest("gw-1", "site-a", [rec("d1", 1)], now_ms=100)
    with pytest.raises(StoreError, match=r"(?i)ingest of 2 records from gateway 'gw-9' failed on .*: \w+: .*not.null"):
        store.ingest("gw-9", "site-z", [rec("d1", 9), bad], now_ms=200)
    assert [s["site_id"] for s in store.list_sites()] == ["site-a"]
    assert store.list_devices()[0]["last_seq"] == 1
    assert store.telemetry_summary()["rows"] == 1


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

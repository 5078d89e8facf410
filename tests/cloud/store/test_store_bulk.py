"""The bulk write path (``TelemetryRecords.ingest_many``, ``cloud.store.bulk``) on SQLite and PostgreSQL: several
gateways' batches in one transaction, each (device, stream, seq) stored once, stored and duplicates per batch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from cloud.store import Store
from common.errors import StoreError
from common.protocol.messages import ForwardRecord
from tests.cloud.store.test_store import store_url  # noqa: F401  (SQLite and PostgreSQL)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    yield s
    s.close()


def recs(device: str, seqs: range, stream: str = "bulk") -> list[ForwardRecord]:
    return [ForwardRecord(device, stream, q, 1_000 + q, "metrics", {"t": q / 2, "tab\tand\\slash": "é\n"})
            for q in seqs]


def test_batches_of_several_gateways_commit_together_with_their_own_counts(store: Store) -> None:
    results = store.telemetry.ingest_many([
        ("gw-1", "site-a", recs("d1", range(1, 101)) + recs("d2", range(1, 51))),
        ("gw-2", "site-b", recs("d3", range(1, 201), "critical")),
        ("gw-3", "site-b", [ForwardRecord("gw-3", "state", 0, 5, "gateway.status", {"link": "up"})]),
    ], now_ms=7)
    assert [(r.stored, r.duplicates, r.reports) for r in results] == [(150, 0, 0), (200, 0, 0), (0, 0, 1)]
    devices = {d["device_id"]: (d["site_id"], d["gateway_id"], d["last_seq"]) for d in store.telemetry.list_devices()}
    assert devices == {"d1": ("site-a", "gw-1", 100), "d2": ("site-a", "gw-1", 50), "d3": ("site-b", "gw-2", 200)}
    assert store.telemetry.site_detail("site-b")["gateways"][1]["status"] == {"link": "up"}
    assert [r["values"] for r in store.telemetry.records_of_kind("metrics", "d1")][:1] == [
        {"t": 0.5, "tab\tand\\slash": "é\n"}]  # COPY's escapes undone


def test_a_key_is_stored_once_whether_repeated_in_the_transaction_or_stored_before(store: Store) -> None:
    assert store.telemetry.ingest("gw-1", "s", recs("d1", range(1, 11)), 1).stored == 10
    results = store.telemetry.ingest_many([
        ("gw-1", "s", recs("d1", range(5, 21))),  # 5..10 stored before
        ("gw-2", "s", recs("d1", range(15, 31)) + recs("d1", range(30, 31))),  # 15..20 in the batch before, 30 twice
        ("gw-1", "s", recs("d1", range(1, 11))),  # a whole resend
    ], now_ms=2)
    assert [(r.stored, r.duplicates) for r in results] == [(10, 6), (10, 7), (0, 10)]
    summary = store.telemetry.telemetry_summary()
    assert (summary["rows"], summary["distinct"], summary["duplicates_stored"]) == (30, 30, 0)
    assert store.telemetry.missing_ranges("d1", "bulk") == []


def test_a_failing_batch_rolls_back_the_whole_transaction(store: Store) -> None:
    bad = ForwardRecord("d9", "bulk", 2, None, "metrics", {})  # type: ignore[arg-type]
    with pytest.raises(StoreError, match=r"(?i)ingest of 12 records in 2 batches failed on .*not.null"):
        store.telemetry.ingest_many([("gw-1", "s", recs("d1", range(1, 11))), ("gw-2", "s", [recs("d9", range(1, 2))[0], bad])], 3)
    assert store.telemetry.telemetry_summary()["rows"] == 0 and store.metrics.backlog()["entries"] == 0
    assert store.telemetry.ingest("gw-1", "s", recs("d1", range(1, 11)), 4).stored == 10  # the connection is usable


def test_one_transaction_writes_one_backlog_entry_naming_its_metric_rows(store: Store) -> None:
    store.telemetry.ingest_many([("gw-1", "s", recs("d1", range(3, 9))), ("gw-2", "s", recs("d2", range(1, 3)))], 5)
    with store.engine.connect() as conn:
        [(ranges,)] = conn.execute(sa.text("SELECT ranges FROM metric_backlog")).all()
    ranges = ranges if isinstance(ranges, list) else __import__("json").loads(ranges)
    assert ranges == [["d1", "bulk", 3, 8, 1003, 1008], ["d2", "bulk", 1, 2, 1001, 1002]]  # seqs, sample times
    assert store.metrics.follow() == 8


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # a PostgreSQL URL only
def test_a_plain_postgresql_url_means_psycopg_3(store_url: str) -> None:
    for plain in (store_url.replace("postgresql+psycopg://", "postgresql://"),
                  store_url.replace("postgresql+psycopg://", "postgres://")):
        with Store.open(plain) as s:
            assert s.engine.dialect.driver == "psycopg"
            assert s.telemetry.ingest("gw-1", "s", recs("d1", range(1, 3)), 1).stored in (0, 2)


def test_a_resent_old_inventory_report_does_not_set_an_older_applied_config(store: Store) -> None:
    def inventory(seq: int, version: str) -> ForwardRecord:
        return ForwardRecord("d1", "state", seq, 1_000 * seq, "inventory", {"config_version": version, "model": "m"})

    store.telemetry.ingest("gw-1", "s", [inventory(1, "v1")], 10)
    store.fleet.set_desired({"d1": ("v2", {"rate": 2})}, 15)
    store.telemetry.ingest("gw-1", "s", [inventory(2, "v2")], 20)
    store.telemetry.ingest("gw-1", "s", [inventory(1, "v1")], 30)  # the first report again: a duplicate
    assert store.fleet.fleet_snapshot()["config"]["d1"]["applied_version"] == "v2"
    assert store.fleet.inventory()["d1"]["attrs"]["config_version"] == "v2"

"""Metrics in the store: raw points and minute/hour rollups folded by the follower from stored telemetry (never
a point lost or counted twice, even when a fold fails halfway; rebuilt from scratch to the same numbers), late
data grows old buckets, queries by device and tier, and retention on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from cloud.fleet.rollup import HOUR_MS, MINUTE_MS, Retention, choose_tier
from cloud.store import Store
from cloud.store.schema import metric_rollups
from common.errors import StoreError
from common.protocol.messages import ForwardRecord
from tests.cloud.store.test_store import store_url  # noqa: F401  (SQLite and PostgreSQL)

T0 = 1_700_000_040_000 - 1_700_000_040_000 % HOUR_MS  # an hour boundary


def m(device: str, seq: int, ts: int, **values) -> ForwardRecord:
    return ForwardRecord(device, "bulk", seq, ts, "metrics", values)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    yield s
    s.close()


class Ingesting:
    """A store whose every ingest is followed by the metrics follower catching up (as the cloud does it)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def ingest(self, gateway: str, site: str, records: list[ForwardRecord], now_ms: int) -> None:
        self.store.telemetry.ingest(gateway, site, records, now_ms)
        self.store.metrics.follow_all()


def rollups(store: Store) -> list[tuple]:
    c = metric_rollups.c
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(metric_rollups).order_by(c.device_id, c.metric, c.width_ms,
                                                                                   c.start_ms))]


def test_ingest_folds_numbers_into_minutes_and_hours_once(store: Store) -> None:
    batch = [m("d1", 1, T0 + 1_000, cpu=10.0, note="x"), m("d1", 2, T0 + 30_000, cpu=30, ok=True),
             m("d1", 3, T0 + 61_000, cpu=20.0)]
    Ingesting(store).ingest("gw-1", "s", batch, T0 + 70_000)
    Ingesting(store).ingest("gw-1", "s", batch, T0 + 80_000)  # redelivered: stored once, counted once
    minutes = store.metrics.metric_series(["d1"], T0, T0 + HOUR_MS, "minute", metric="cpu")
    assert [(p["ts_ms"], p["count"], p["min"], p["max"], p["mean"]) for p in minutes] == [
        (T0, 2, 10.0, 30.0, 20.0), (T0 + MINUTE_MS, 1, 20.0, 20.0, 20.0)]
    [hour] = store.metrics.metric_series(["d1"], T0, T0 + HOUR_MS, "hour", metric="cpu")
    assert (hour["count"], hour["min"], hour["max"], hour["mean"]) == (3, 10.0, 30.0, 20.0)
    raw = store.metrics.metric_series(["d1"], T0, T0 + HOUR_MS, "raw")
    assert {(p["metric"], p["value"]) for p in raw} == {("cpu", 10.0), ("cpu", 30.0), ("cpu", 20.0)}  # no bool, no text


def test_late_data_grows_the_old_bucket(store: Store) -> None:
    Ingesting(store).ingest("gw-1", "s", [m("d1", 2, T0 + 5_000, t=4.0)], T0 + 10_000)
    Ingesting(store).ingest("gw-1", "s", [m("d1", 1, T0 + 2_000, t=2.0)], T0 + 6 * HOUR_MS)  # a gateway back after 6 h
    [minute] = store.metrics.metric_series(["d1"], T0, T0 + MINUTE_MS, "minute")
    assert (minute["count"], minute["min"], minute["max"]) == (2, 2.0, 4.0)


def test_retention_deletes_each_tier_after_its_period_on_a_fake_clock(store: Store) -> None:
    keep = Retention(raw_ms=2 * MINUTE_MS, minute_ms=2 * HOUR_MS, hour_ms=24 * HOUR_MS)
    Ingesting(store).ingest("gw-1", "s", [m("d1", 1, T0 + 1_000, t=1.0), m("d1", 2, T0 + 3 * MINUTE_MS, t=3.0)], T0)
    now = T0 + 3 * MINUTE_MS + 30_000
    assert store.metrics.apply_retention(keep, now) == {"raw": 1, "minute": 0, "hour": 0}
    assert [p["value"] for p in store.metrics.metric_series(["d1"], 0, now, "raw")] == [3.0]
    assert len(store.metrics.metric_series(["d1"], 0, now, "minute")) == 2  # minutes outlive raw
    now = T0 + 2 * HOUR_MS + 2 * MINUTE_MS  # the first minute bucket is wholly out of minute retention
    assert store.metrics.apply_retention(keep, now) == {"raw": 1, "minute": 1, "hour": 0}
    now = T0 + 26 * HOUR_MS
    assert store.metrics.apply_retention(keep, now) == {"raw": 0, "minute": 1, "hour": 1}
    assert store.metrics.metric_series(["d1"], 0, now, "hour") == []


def test_the_query_tier_follows_retention() -> None:
    keep = Retention(raw_ms=HOUR_MS, minute_ms=24 * HOUR_MS, hour_ms=30 * 24 * HOUR_MS)
    assert choose_tier(T0 - HOUR_MS, T0, keep) == "raw"
    assert choose_tier(T0 - 2 * HOUR_MS, T0, keep) == "minute"
    assert choose_tier(T0 - 48 * HOUR_MS, T0, keep) == "hour"


def test_the_ack_path_makes_no_points_and_the_follower_folds_each_row_once(store: Store) -> None:
    batch = [m(f"d{i % 3}", i, T0 + i * 1_000, cpu=float(i), mem=2 * i) for i in range(1, 31)]
    store.telemetry.ingest("gw-1", "s", batch[:20], T0)
    assert store.metrics.metric_series(["d0", "d1", "d2"], T0, T0 + HOUR_MS, "raw") == []  # not on the ack path
    assert store.metrics.backlog()["entries"] == 1
    store.telemetry.ingest("gw-1", "s", batch[10:], T0)  # ten again: stored once, so never tagged twice
    assert store.metrics.follow(max_rows=5) == 20  # whole entries, at least one: the oldest, 20 rows
    assert store.metrics.backlog() == {"entries": 1, "oldest_ms": T0}
    assert store.metrics.follow() == 10 and store.metrics.follow() == 0
    [hour] = store.metrics.metric_series(["d0", "d1", "d2"], T0, T0 + HOUR_MS, "hour", metric="cpu")[:1]
    assert hour["count"] == 10  # d0: seqs 3, 6, .. 30
    total = sum(p["count"] for p in store.metrics.metric_series(["d0", "d1", "d2"], T0, T0 + HOUR_MS, "hour"))
    assert total == 60  # 30 records, 2 metrics each, each once


def test_a_fold_that_fails_halfway_leaves_the_backlog_whole_and_the_next_counts_once(store: Store, monkeypatch) -> None:
    store.telemetry.ingest("gw-1", "s", [m("d1", i, T0 + i, t=1.0) for i in range(1, 11)], T0)
    real = store.metrics.fold_in

    def fold_then_fail(conn, specs):
        real(conn, specs)  # points and rollups written in the follower's transaction ...
        conn.exec_driver_sql("SELECT no_such_column FROM metric_backlog")  # ... which then fails: all rolled back

    monkeypatch.setattr(store.metrics, "fold_in", fold_then_fail)
    with pytest.raises(StoreError, match="folding stored metrics"):
        store.metrics.follow()
    assert rollups(store) == [] and store.metrics.backlog()["entries"] == 1
    monkeypatch.setattr(store.metrics, "fold_in", real)
    assert store.metrics.follow() == 10
    [hour] = store.metrics.metric_series(["d1"], T0, T0 + HOUR_MS, "hour")
    assert hour["count"] == 10


def test_rebuild_forgets_and_folds_everything_again_to_the_same_numbers(store: Store) -> None:
    for k in range(3):  # three ingests, some repeating, some late
        store.telemetry.ingest("gw-1", "s", [m("d1", i, T0 + i * 7_000, t=float(i)) for i in range(5 * k, 5 * k + 8)]
                               + [m("d2", k + 1, T0 - HOUR_MS + k, t=1.5)], T0 + k)
    store.metrics.follow_all()
    before = rollups(store)
    assert before and sum(r[4] for r in before if r[2] == HOUR_MS) == 17 + 3  # d1: seqs 1..17 (seq 0 is no telemetry); d2: 3
    assert store.metrics.rebuild(T0 + 10) == 2  # one entry per (device, stream)
    assert rollups(store) == [] and store.metrics.backlog()["entries"] == 2
    assert store.metrics.follow_all() == 20
    assert rollups(store) == before

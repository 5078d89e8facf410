"""Metrics in the store: raw points and minute/hour rollups folded at ingest (duplicates never counted twice,
late data grows old buckets), queries by device and tier, and retention on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.fleet.rollup import HOUR_MS, MINUTE_MS, Retention, choose_tier
from cloud.store import Store
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


def test_ingest_folds_numbers_into_minutes_and_hours_once(store: Store) -> None:
    batch = [m("d1", 1, T0 + 1_000, cpu=10.0, note="x"), m("d1", 2, T0 + 30_000, cpu=30, ok=True),
             m("d1", 3, T0 + 61_000, cpu=20.0)]
    store.telemetry.ingest("gw-1", "s", batch, T0 + 70_000)
    store.telemetry.ingest("gw-1", "s", batch, T0 + 80_000)  # redelivered: stored once, counted once
    minutes = store.metrics.metric_series(["d1"], T0, T0 + HOUR_MS, "minute", metric="cpu")
    assert [(p["ts_ms"], p["count"], p["min"], p["max"], p["mean"]) for p in minutes] == [
        (T0, 2, 10.0, 30.0, 20.0), (T0 + MINUTE_MS, 1, 20.0, 20.0, 20.0)]
    [hour] = store.metrics.metric_series(["d1"], T0, T0 + HOUR_MS, "hour", metric="cpu")
    assert (hour["count"], hour["min"], hour["max"], hour["mean"]) == (3, 10.0, 30.0, 20.0)
    raw = store.metrics.metric_series(["d1"], T0, T0 + HOUR_MS, "raw")
    assert {(p["metric"], p["value"]) for p in raw} == {("cpu", 10.0), ("cpu", 30.0), ("cpu", 20.0)}  # no bool, no text


def test_late_data_grows_the_old_bucket(store: Store) -> None:
    store.telemetry.ingest("gw-1", "s", [m("d1", 2, T0 + 5_000, t=4.0)], T0 + 10_000)
    store.telemetry.ingest("gw-1", "s", [m("d1", 1, T0 + 2_000, t=2.0)], T0 + 6 * HOUR_MS)  # a gateway back after 6 h
    [minute] = store.metrics.metric_series(["d1"], T0, T0 + MINUTE_MS, "minute")
    assert (minute["count"], minute["min"], minute["max"]) == (2, 2.0, 4.0)


def test_retention_deletes_each_tier_after_its_period_on_a_fake_clock(store: Store) -> None:
    keep = Retention(raw_ms=2 * MINUTE_MS, minute_ms=2 * HOUR_MS, hour_ms=24 * HOUR_MS)
    store.telemetry.ingest("gw-1", "s", [m("d1", 1, T0 + 1_000, t=1.0), m("d1", 2, T0 + 3 * MINUTE_MS, t=3.0)], T0)
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

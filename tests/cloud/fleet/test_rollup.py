from __future__ import annotations

import random

import pytest

import cloud.fleet.rollup
from cloud.fleet.rollup import (
    HOUR_MS,
    MINUTE_MS,
    Aggregate,
    Cutoffs,
    Retention,
    Sample,
    bucket_start,
    choose_tier,
    cutoffs,
    downsample,
    expired,
    rollup,
)
from common.errors import ConfigError

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # an hour boundary
DAY_MS = 24 * HOUR_MS


def test_all() -> None:
    assert cloud.fleet.rollup.__all__ == sorted(cloud.fleet.rollup.__all__)
    assert set(cloud.fleet.rollup.__all__) == {
        "DEFAULT_RETENTION", "HOUR_MS", "MINUTE_MS", "Aggregate", "Cutoffs", "Retention", "Sample", "bucket_start", "choose_tier",
        "cutoffs", "downsample", "expired", "rollup",
    }


def test_bucket_start() -> None:
    assert bucket_start(T0, MINUTE_MS) == T0
    assert bucket_start(T0 + 59_999, MINUTE_MS) == T0
    assert bucket_start(T0 + 60_000, MINUTE_MS) == T0 + 60_000
    assert bucket_start(T0 + HOUR_MS - 1, HOUR_MS) == T0
    assert bucket_start(-1, MINUTE_MS) == -60_000


# --- downsampling ------------------------------------------------------------------------------

def test_per_minute_aggregates() -> None:
    samples = [
        Sample("d1", "temp", T0 + 1_000, 20.0),
        Sample("d1", "temp", T0 + 30_000, 22.0),
        Sample("d1", "temp", T0 + 59_999, 21.0),
        Sample("d1", "temp", T0 + 60_000, 25),
        Sample("d1", "hum", T0 + 5_000, 40),
        Sample("d2", "temp", T0 + 5_000, -3.5),
    ]
    aggs = downsample(samples)
    assert aggs == [
        Aggregate("d1", "hum", T0, MINUTE_MS, 1, 40.0, 40.0, 40.0),
        Aggregate("d1", "temp", T0, MINUTE_MS, 3, 20.0, 22.0, 63.0),
        Aggregate("d1", "temp", T0 + MINUTE_MS, MINUTE_MS, 1, 25.0, 25.0, 25.0),
        Aggregate("d2", "temp", T0, MINUTE_MS, 1, -3.5, -3.5, -3.5),
    ]
    assert aggs[1].mean == 21.0
    assert aggs[1].end_ms == T0 + MINUTE_MS


def test_per_hour_aggregates_from_samples_and_from_minutes_agree() -> None:
    rng = random.Random(3)
    samples = [  # integer values, so sums are exact whatever the order of addition
        Sample(f"d{rng.randrange(3)}", rng.choice("ab"), T0 + rng.randrange(3 * HOUR_MS), rng.randrange(-50, 50))
        for _ in range(2_000)
    ]
    direct = downsample(samples, HOUR_MS)
    via_minutes = rollup(downsample(samples, MINUTE_MS), HOUR_MS)
    assert direct == via_minutes
    assert sum(a.count for a in direct) == 2_000
    assert {a.start_ms for a in direct} == {T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS}


def test_non_numeric_values_are_left_out_and_bools_count_as_0_and_1() -> None:
    samples = [
        Sample("d", "door", T0, True),
        Sample("d", "door", T0 + 1, False),
        Sample("d", "door", T0 + 2, False),
        Sample("d", "door", T0 + 3, False),
        Sample("d", "door", T0 + 4, None),
        Sample("d", "door", T0 + 5, "open"),
        Sample("d", "door", T0 + 6, float("nan")),
        Sample("d", "door", T0 + 7, float("inf")),
    ]
    [agg] = downsample(samples)
    assert (agg.count, agg.min, agg.max, agg.mean) == (4, 0.0, 1.0, 0.25)
    assert downsample([Sample("d", "x", T0, "text")]) == []


def test_merge_is_the_aggregate_of_the_union() -> None:
    first = [Sample("d", "m", T0 + i, float(i)) for i in range(10)]
    late = [Sample("d", "m", T0 + 100 + i, float(-i)) for i in range(5)]
    [a], [b], [both] = downsample(first), downsample(late), downsample(first + late)
    assert a.merge(b) == both == b.merge(a)


def test_merge_refuses_different_buckets() -> None:
    [a] = downsample([Sample("d", "m", T0, 1)])
    [b] = downsample([Sample("d", "m", T0 + MINUTE_MS, 1)])
    with pytest.raises(ValueError, match="different buckets"):
        a.merge(b)


def test_rollup_refuses_widths_that_do_not_divide() -> None:
    [a] = downsample([Sample("d", "m", T0, 1)], 7_000)
    with pytest.raises(ValueError, match="not an aligned divisor"):
        rollup([a], MINUTE_MS)
    with pytest.raises(ValueError):
        downsample([], 0)


# --- retention on a fake clock -------------------------------------------------------------------

def test_retention_settings_are_checked() -> None:
    Retention(raw_ms=DAY_MS, minute_ms=DAY_MS, hour_ms=DAY_MS)
    for bad in [(0, 1, 1), (-1, 1, 1), (2, 1, 3), (1, 3, 2), (1.5, 2, 3)]:
        with pytest.raises(ConfigError):
            Retention(*bad)  # type: ignore[arg-type]


def test_cutoffs() -> None:
    r = Retention(raw_ms=HOUR_MS, minute_ms=DAY_MS, hour_ms=30 * DAY_MS)
    now = T0 + 10 * DAY_MS + 123
    assert cutoffs(r, now) == Cutoffs(
        raw=now - HOUR_MS,
        minute=now - DAY_MS - MINUTE_MS + 1,
        hour=now - 30 * DAY_MS - HOUR_MS + 1,
    )


class FakeStore:
    """The three tiers in memory, ingesting and expiring the way the real store will."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.raw: list[Sample] = []
        self.minutes: dict[tuple[str, str, int, int], Aggregate] = {}
        self.hours: dict[tuple[str, str, int, int], Aggregate] = {}

    def ingest(self, batch: list[Sample]) -> None:
        self.raw.extend(batch)
        for tier, width in ((self.minutes, MINUTE_MS), (self.hours, HOUR_MS)):
            for agg in downsample(batch, width):
                old = tier.get(agg.key)
                tier[agg.key] = agg if old is None else old.merge(agg)

    def expire(self, now_ms: int) -> int:
        rows = [*self.raw, *self.minutes.values(), *self.hours.values()]
        gone = expired(rows, self.retention, now_ms)
        gone_ids = {id(row) for row in gone}
        self.raw = [s for s in self.raw if id(s) not in gone_ids]
        for tier in (self.minutes, self.hours):
            for key in [k for k, a in tier.items() if id(a) in gone_ids]:
                del tier[key]
        return len(gone)


def test_retention_deletes_each_tier_at_its_own_age() -> None:
    r = Retention(raw_ms=10 * MINUTE_MS, minute_ms=2 * HOUR_MS, hour_ms=DAY_MS)
    store = FakeStore(r)
    # a fake clock: one sample per 10 s for 3 hours, retention run after every batch
    now = T0
    for _ in range(3 * 360):
        store.ingest([Sample("d", "m", now, 1.0)])
        now += 10_000
        store.expire(now)
    # raw: only the last 10 minutes
    assert min(s.ts_ms for s in store.raw) >= now - 10 * MINUTE_MS
    assert len(store.raw) == 60
    # minutes: every bucket that still overlaps the last 2 hours, nothing older
    starts = sorted(a.start_ms for a in store.minutes.values())
    assert starts[0] <= now - 2 * HOUR_MS < starts[0] + MINUTE_MS
    assert len(starts) == 120
    # hours: all three, each complete (the upsert folded every batch in)
    assert [(a.start_ms, a.count) for a in sorted(store.hours.values(), key=lambda a: a.start_ms)] == [
        (T0, 360), (T0 + HOUR_MS, 360), (T0 + 2 * HOUR_MS, 360)
    ]
    # a day later everything is gone but the retention run is still harmless
    store.expire(now + DAY_MS + HOUR_MS)
    assert (store.raw, store.minutes, store.hours) == ([], {}, {})
    assert store.expire(now + 2 * DAY_MS) == 0


def test_an_aggregate_is_kept_while_any_part_of_its_bucket_is_in_retention() -> None:
    r = Retention(raw_ms=MINUTE_MS, minute_ms=HOUR_MS, hour_ms=DAY_MS)
    [minute] = downsample([Sample("d", "m", T0, 1)], MINUTE_MS)
    [hour] = downsample([Sample("d", "m", T0, 1)], HOUR_MS)
    # the minute [T0, T0+1min) is entirely older than now - 1h once now >= T0 + 1min + 1h
    assert expired([minute], r, T0 + MINUTE_MS + HOUR_MS - 1) == []
    assert expired([minute], r, T0 + MINUTE_MS + HOUR_MS) == [minute]
    assert expired([hour], r, T0 + HOUR_MS + DAY_MS - 1) == []
    assert expired([hour], r, T0 + HOUR_MS + DAY_MS) == [hour]


def test_raw_expiry_boundary() -> None:
    r = Retention(raw_ms=MINUTE_MS, minute_ms=HOUR_MS, hour_ms=DAY_MS)
    s = Sample("d", "m", T0, 1)
    assert expired([s], r, T0 + MINUTE_MS) == []
    assert expired([s], r, T0 + MINUTE_MS + 1) == [s]


def test_late_samples_grow_old_buckets_instead_of_being_lost() -> None:
    # a gateway offline for 6 h flushes its backlog: the old minutes and hours are completed, not skipped
    r = Retention(raw_ms=HOUR_MS, minute_ms=DAY_MS, hour_ms=30 * DAY_MS)
    store = FakeStore(r)
    store.ingest([Sample("d", "m", T0 + 1_000, 5.0)])
    now = T0 + 6 * HOUR_MS
    store.expire(now)
    assert store.raw == []  # the first sample is past raw retention ...
    store.ingest([Sample("d", "m", T0 + 2_000, 7.0), Sample("d", "m", T0 + HOUR_MS + 5, 1.0)])
    store.expire(now)
    assert store.raw == []  # ... and so are the late ones, but all three are in the aggregates
    assert store.minutes[("d", "m", MINUTE_MS, T0)] == Aggregate("d", "m", T0, MINUTE_MS, 2, 5.0, 7.0, 12.0)
    assert store.hours[("d", "m", HOUR_MS, T0)].count == 2
    assert store.hours[("d", "m", HOUR_MS, T0 + HOUR_MS)].count == 1


def test_expired_refuses_an_aggregate_with_no_tier() -> None:
    [odd] = downsample([Sample("d", "m", T0, 1)], 5_000)
    with pytest.raises(ValueError, match="no retention tier"):
        expired([odd], Retention(1, 1, 1), T0)


def test_choose_tier() -> None:
    r = Retention(raw_ms=HOUR_MS, minute_ms=DAY_MS, hour_ms=30 * DAY_MS)
    now = T0 + 100 * DAY_MS
    assert choose_tier(now - 5 * MINUTE_MS, now, r) == "raw"
    assert choose_tier(now - HOUR_MS, now, r) == "raw"
    assert choose_tier(now - HOUR_MS - 1, now, r) == "minute"
    assert choose_tier(now - DAY_MS, now, r) == "minute"
    assert choose_tier(now - 7 * DAY_MS, now, r) == "hour"
    assert choose_tier(now - 365 * DAY_MS, now, r) == "hour"

"""Telemetry downsampling and retention: pure functions the store runs over its rows.

Three tiers, each with its own retention (``Retention``)::

    raw samples       (device, metric, ts_ms, value)          kept raw_ms
    minute aggregates (device, metric, start_ms, count, min, max, sum)   kept minute_ms
    hour aggregates   (same, one per hour)                    kept hour_ms

Aggregates are *mergeable* (count and sum add, min and max combine), so the store
can fold each batch of newly inserted samples into the minute and hour rows with
an upsert (``downsample`` then ``Aggregate.merge``). This is what makes late data
correct: a gateway that was offline for six hours flushes its backlog and the
old buckets simply grow, with no "already rolled up" watermark to miss them. The
store must fold only samples it actually inserted (its primary key drops
duplicates), or a redelivered record would be counted twice.

Retention deletes whole rows: a raw sample once ``ts_ms < now - raw_ms``, an
aggregate once its *whole* bucket is older than its tier's retention. Each
``cutoff`` is "delete the rows whose key is below this", so the store runs one
``DELETE ... WHERE key < cutoff`` per tier; ``expired`` is the same rule over
an iterable (for in-memory stores and tests). ``now`` is always an argument.

Values: ints and floats are aggregated; bools count as 0/1 (a door open 25% of
the minute has mean 0.25); anything else (None, text, NaN, infinity) is left
out of the aggregates (the raw row still has it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from common.errors import ConfigError

__all__ = [
    "Aggregate",
    "Cutoffs",
    "DEFAULT_RETENTION",
    "HOUR_MS",
    "MINUTE_MS",
    "Retention",
    "Sample",
    "bucket_start",
    "choose_tier",
    "cutoffs",
    "downsample",
    "expired",
    "rollup",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


class Sample(NamedTuple):
    device: str
    metric: str
    ts_ms: int
    value: Any


@dataclass(frozen=True)
class Aggregate:
    """Samples of one (device, metric) in the bucket ``[start_ms, start_ms + width_ms)``."""

    device: str
    metric: str
    start_ms: int
    width_ms: int
    count: int
    min: float
    max: float
    sum: float

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.width_ms

    @property
    def mean(self) -> float:
        return self.sum / self.count

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.device, self.metric, self.width_ms, self.start_ms)

    def merge(self, other: Aggregate) -> Aggregate:
        """The aggregate of both buckets' samples; they must be the same bucket."""
        if other.key != self.key:
            raise ValueError(f"cannot merge aggregate {other.key!r} into {self.key!r}: different buckets")
        return Aggregate(
            self.device,
            self.metric,
            self.start_ms,
            self.width_ms,
            self.count + other.count,
            min(self.min, other.min),
            max(self.max, other.max),
            self.sum + other.sum,
        )


def bucket_start(ts_ms: int, width_ms: int) -> int:
    """Start of the ``width_ms`` bucket holding ``ts_ms`` (buckets are aligned to the epoch)."""
    return ts_ms - ts_ms % width_ms  # Python's % floors, so this holds for negative ts too


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def _add(out: dict[tuple[str, str, int, int], Aggregate], agg: Aggregate) -> None:
    old = out.get(agg.key)
    out[agg.key] = agg if old is None else old.merge(agg)


def downsample(samples: Iterable[Sample], width_ms: int = MINUTE_MS) -> list[Aggregate]:
    """Aggregate raw samples into ``width_ms`` buckets, sorted by (device, metric, start_ms)."""
    _check_width(width_ms)
    # plain lists per bucket, one Aggregate per bucket at the end (this runs for every ingested batch)
    acc: dict[tuple[str, str, int], list[float]] = {}
    for s in samples:
        v = _number(s.value)
        if v is None:
            continue
        key = (s.device, s.metric, s.ts_ms - s.ts_ms % width_ms)
        a = acc.get(key)
        if a is None:
            acc[key] = [1, v, v, v]
        else:
            a[0] += 1
            if v < a[1]:
                a[1] = v
            if v > a[2]:
                a[2] = v
            a[3] += v
    return [Aggregate(d, m, start, width_ms, int(a[0]), a[1], a[2], a[3])
            for (d, m, start), a in sorted(acc.items())]


def rollup(aggregates: Iterable[Aggregate], width_ms: int = HOUR_MS) -> list[Aggregate]:
    """Coarsen aggregates (e.g. minutes to hours); ``width_ms`` must be a multiple of each input width."""
    _check_width(width_ms)
    out: dict[tuple[str, str, int, int], Aggregate] = {}
    for a in aggregates:
        if width_ms % a.width_ms or a.start_ms % a.width_ms:
            raise ValueError(
                f"cannot roll the {a.width_ms} ms bucket at {a.start_ms} of {a.device!r}/{a.metric!r} "
                f"up into {width_ms} ms buckets: not an aligned divisor"
            )
        start = bucket_start(a.start_ms, width_ms)
        _add(out, Aggregate(a.device, a.metric, start, width_ms, a.count, a.min, a.max, a.sum))
    return [out[k] for k in sorted(out)]


def _check_width(width_ms: int) -> None:
    if not (isinstance(width_ms, int) and width_ms > 0):
        raise ValueError(f"bucket width must be a positive number of ms, got {width_ms!r}")


@dataclass(frozen=True)
class Retention:
    """How long each tier is kept, in ms; coarser tiers are kept at least as long as finer ones."""

    raw_ms: int
    minute_ms: int
    hour_ms: int

    def __post_init__(self) -> None:
        for name in ("raw_ms", "minute_ms", "hour_ms"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ConfigError(f"telemetry retention {name} must be a positive number of ms, got {value!r}")
        if not self.raw_ms <= self.minute_ms <= self.hour_ms:
            raise ConfigError(
                "telemetry retention must keep coarser data at least as long as finer data: "
                f"raw {self.raw_ms} <= minute {self.minute_ms} <= hour {self.hour_ms} ms does not hold"
            )


DEFAULT_RETENTION = Retention(raw_ms=24 * 3600_000, minute_ms=7 * 24 * 3600_000, hour_ms=90 * 24 * 3600_000)
"""Raw points a day, minute aggregates a week, hour aggregates 90 days (the cloud's ``metrics_*_s``)."""


class Cutoffs(NamedTuple):
    """Delete raw rows with ``ts_ms < raw``, minute and hour rows with ``start_ms <`` their cutoff."""

    raw: int
    minute: int
    hour: int


def cutoffs(retention: Retention, now_ms: int) -> Cutoffs:
    """The delete cutoffs at ``now_ms``: an aggregate goes only once its whole bucket is out of retention."""
    # bucket [s, s + w) is entirely older than now - keep  <=>  s + w <= now - keep  <=>  s < now - keep - w + 1
    return Cutoffs(
        raw=now_ms - retention.raw_ms,
        minute=now_ms - retention.minute_ms - MINUTE_MS + 1,
        hour=now_ms - retention.hour_ms - HOUR_MS + 1,
    )


def expired(rows: Iterable[Sample | Aggregate], retention: Retention, now_ms: int) -> list[Sample | Aggregate]:
    """The rows the retention policy deletes at ``now_ms`` (in input order)."""
    c = cutoffs(retention, now_ms)
    out: list[Sample | Aggregate] = []
    for row in rows:
        if isinstance(row, Sample):
            gone = row.ts_ms < c.raw
        elif row.width_ms == MINUTE_MS:
            gone = row.start_ms < c.minute
        elif row.width_ms == HOUR_MS:
            gone = row.start_ms < c.hour
        else:
            raise ValueError(
                f"no retention tier for {row.width_ms} ms aggregates of {row.device!r}/{row.metric!r}"
            )
        if gone:
            out.append(row)
    return out


def choose_tier(since_ms: int, now_ms: int, retention: Retention) -> str:
    """The finest tier (``"raw"``, ``"minute"``, ``"hour"``) still holding data back to ``since_ms``.

    For ``metrics DEVICE --since 1h``: raw if the hour is within raw retention, else minutes, else hours
    (older than that nothing is kept, and hours are the best there is).
    """
    age = now_ms - since_ms
    if age <= retention.raw_ms:
        return "raw"
    if age <= retention.minute_ms:
        return "minute"
    return "hour"

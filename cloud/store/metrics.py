"""The store's metrics: raw numeric samples, their per-minute and per-hour rollups, and retention.

Ingest hands it the telemetry rows it actually
inserted (``ingest_in``, in ingest's transaction): each numeric value of a ``metrics``
record becomes a raw point and is folded into its minute and hour buckets with an
upsert (``cloud.fleet.rollup``: aggregates are mergeable, so late data from a
gateway that was offline for hours just grows the old buckets). A duplicate is never
inserted, so it is never counted twice.

    metrics.metric_series(["d1"], since_ms, until_ms, "minute", metric="cpu_percent")
    metrics.apply_retention(Retention(...), now_ms)      # {"raw": n, "minute": n, "hour": n} rows deleted
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.fleet.rollup import HOUR_MS, MINUTE_MS, Retention, Sample, cutoffs, downsample
from cloud.store.database import IN_CHUNK, Database
from cloud.store.schema import metric_points, metric_rollups

__all__ = ["METRICS_KIND", "MetricRecords", "TIERS"]

METRICS_KIND = "metrics"
TIERS = {"minute": MINUTE_MS, "hour": HOUR_MS}
_SQLITE_POINTS = "INSERT INTO metric_points (device_id, metric, ts_ms, value) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"


class MetricRecords:
    """Raw metric points, their rollups, and retention."""

    def __init__(self, db: Database) -> None:
        self._db = db


    def ingest_in(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Raw points and rollups of the newly stored ``metrics`` rows; returns the points inserted."""
        samples = [
            Sample(row["device_id"], str(metric), int(row["ts_ms"]), value)
            for row in rows
            if row["kind"] == METRICS_KIND
            for metric, value in row["values"].items()
        ]
        points = {}
        for s in samples:
            if isinstance(s.value, (int, float)) and not isinstance(s.value, bool) and s.value == s.value:
                if abs(s.value) != float("inf"):
                    points.setdefault((s.device, s.metric, s.ts_ms), float(s.value))
        if not points:
            return 0
        # ``rows`` are telemetry rows this transaction inserted, so their samples are new: they are folded
        # into the rollups whether or not a raw point of the same (device, metric, ms) is already kept
        params = [(d, m, t, v) for (d, m, t), v in sorted(points.items())]
        if conn.dialect.name == "sqlite":  # the hot path of every batch: the driver's executemany, no Core per row
            conn.exec_driver_sql(_SQLITE_POINTS, params)
        else:
            conn.execute(
                self._db.insert(metric_points).on_conflict_do_nothing(
                    index_elements=[metric_points.c.device_id, metric_points.c.metric, metric_points.c.ts_ms]
                ),
                [{"device_id": d, "metric": m, "ts_ms": t, "value": v} for d, m, t, v in params],
            )
        fresh = [Sample(d, m, t, v) for d, m, t, v in params]
        for width in (MINUTE_MS, HOUR_MS):
            aggs = downsample(fresh, width)
            if not aggs:
                continue
            ins = self._db.insert(metric_rollups)
            col, new = metric_rollups.c, ins.excluded
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[col.device_id, col.metric, col.width_ms, col.start_ms],
                    set_={
                        "count": col.count + new["count"],
                        "sum": col.sum + new["sum"],
                        "min": sa.case((new["min"] < col.min, new["min"]), else_=col.min),
                        "max": sa.case((new["max"] > col.max, new["max"]), else_=col.max),
                    },
                ),
                [{"device_id": a.device, "metric": a.metric, "width_ms": a.width_ms, "start_ms": a.start_ms,
                  "count": a.count, "min": a.min, "max": a.max, "sum": a.sum} for a in aggs],
            )
        return len(fresh)

    def metric_series(
        self,
        device_ids: Sequence[str],
        since_ms: int,
        until_ms: int,
        tier: str,
        *,
        metric: str | None = None,
    ) -> list[dict[str, Any]]:
        """Points of these devices in ``[since_ms, until_ms)``, by device, metric and time.

        ``tier`` "raw": device_id, metric, ts_ms, value. "minute"/"hour": device_id, metric, ts_ms (the
        bucket's start), count, min, max, mean.
        """
        ids = sorted(set(device_ids))
        out: list[dict[str, Any]] = []
        with self._db.transaction(f"reading {tier} metrics of {len(ids)} devices", snapshot=True) as conn:
            for i in range(0, len(ids), IN_CHUNK):
                chunk = ids[i : i + IN_CHUNK]
                if tier == "raw":
                    t = metric_points.c
                    query = sa.select(t.device_id, t.metric, t.ts_ms, t.value).where(
                        t.device_id.in_(chunk), t.ts_ms >= since_ms, t.ts_ms < until_ms
                    )
                    order = (t.device_id, t.metric, t.ts_ms)
                else:
                    t = metric_rollups.c
                    query = sa.select(
                        t.device_id, t.metric, t.start_ms.label("ts_ms"), t["count"], t.min, t.max, t.sum
                    ).where(t.device_id.in_(chunk), t.width_ms == TIERS[tier], t.start_ms >= since_ms - TIERS[tier] + 1,
                            t.start_ms < until_ms)
                    order = (t.device_id, t.metric, t.start_ms)
                if metric is not None:
                    query = query.where(t.metric == metric)
                for row in conn.execute(query.order_by(*order)).mappings():
                    row = dict(row)
                    if tier != "raw":
                        row["mean"] = row.pop("sum") / row["count"] if row["count"] else None
                    out.append(row)
        return out

    def apply_retention(self, retention: Retention, now_ms: int) -> dict[str, int]:
        """Delete what ``retention`` no longer keeps at ``now_ms``; the rows deleted per tier."""
        c = cutoffs(retention, now_ms)
        with self._db.transaction("applying metric retention") as conn:
            raw = conn.execute(sa.delete(metric_points).where(metric_points.c.ts_ms < c.raw)).rowcount
            minute = conn.execute(
                sa.delete(metric_rollups).where(metric_rollups.c.width_ms == MINUTE_MS, metric_rollups.c.start_ms < c.minute)
            ).rowcount
            hour = conn.execute(
                sa.delete(metric_rollups).where(metric_rollups.c.width_ms == HOUR_MS, metric_rollups.c.start_ms < c.hour)
            ).rowcount
        return {"raw": raw, "minute": minute, "hour": hour}

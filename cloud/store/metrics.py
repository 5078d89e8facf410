"""The store's metrics: raw numeric samples, their per-minute and per-hour rollups, and retention.

They are derived from stored telemetry by a follower, off the acknowledgement path. Each
ingest transaction that stores telemetry also writes one ``metric_backlog`` entry
(``backlog_in``) naming where its ``metrics`` rows lie, and tags those rows with the
entry's id. ``follow`` takes the oldest entries and, in the database (``cloud.store.fold``),
makes each numeric value of their rows a raw point and folds it into its minute and hour
buckets with an upsert (aggregates are mergeable, so late data from a gateway that was
offline for hours just grows the old buckets), and deletes the entries, all in one
transaction: a row is folded once or not yet, never twice, never lost (a duplicate is
never stored, so never tagged). ``rebuild`` throws every point and rollup away and
makes the follower fold all stored rows again.

    metrics.follow(max_rows=20_000)      # rows folded (the cloud runs it on its store thread, cloud.driver)
    metrics.backlog()                    # {"entries": n, "oldest_ms": ms}: how far behind the follower is

    metrics.metric_series(["d1"], since_ms, until_ms, "minute", metric="cpu_percent")
    metrics.apply_retention(Retention(...), now_ms)      # {"raw": n, "minute": n, "hour": n} rows deleted
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.fleet.rollup import HOUR_MS, MINUTE_MS, Retention, cutoffs
from cloud.store.bulk import Row
from cloud.store.database import IN_CHUNK, Database
from cloud.store.fold import fold
from cloud.store.schema import metric_backlog, metric_points, metric_rollups, telemetry

__all__ = ["METRICS_KIND", "MetricRecords", "TIERS"]

METRICS_KIND = "metrics"
TIERS = {"minute": MINUTE_MS, "hour": HOUR_MS}


class MetricRecords:
    """Raw metric points, their rollups, and retention."""

    def __init__(self, db: Database) -> None:
        self._db = db


    def backlog_in(self, conn: sa.Connection, rows: Sequence[Row], now_ms: int) -> int:
        """In ingest's transaction: the ``metric_backlog`` entry for telemetry ``rows`` about to be stored; its id
        tags them (``telemetry.ingest_id``). It names where the ``metrics`` rows lie, per (device, stream)."""
        spans: dict[tuple[str, str], list[Any]] = {}  # [first seq, last seq, first ts_ms, last ts_ms]
        for device_id, stream, seq, ts_ms, kind, _, _ in rows:
            if kind == METRICS_KIND:
                span = spans.get((device_id, stream))
                if span is None:
                    spans[(device_id, stream)] = [seq, seq, ts_ms, ts_ms]
                    continue
                if seq < span[0]:
                    span[0] = seq
                elif seq > span[1]:
                    span[1] = seq
                if ts_ms is None or span[2] is None:  # no time (a row the insert refuses): no bound
                    span[2] = span[3] = None
                elif ts_ms < span[2]:
                    span[2] = ts_ms
                elif ts_ms > span[3]:
                    span[3] = ts_ms
        # the sample times bound the fold's join: on PostgreSQL it reads only the day partitions they fall in
        ranges = [[d, s, *span] for (d, s), span in sorted(spans.items())]
        ins = sa.insert(metric_backlog).values(ranges=ranges, received_ms=now_ms).returning(metric_backlog.c.id)
        return int(conn.execute(ins).scalar_one())

    def follow(self, max_rows: int = 20_000) -> int:
        """The follower's step: fold the oldest backlog entries (about ``max_rows`` telemetry rows; at least one
        entry) into points and rollups (``cloud.store.fold``, set-based) and delete them, in ONE transaction,
        so an entry is folded once or not at all; the rows folded."""
        with self._db.transaction("folding stored metrics", immediate=True) as conn:
            query = sa.select(metric_backlog.c.id, metric_backlog.c.ranges).order_by(metric_backlog.c.id).limit(256)
            if conn.dialect.name == "postgresql":  # two coordinators' followers take different entries
                query = query.with_for_update(skip_locked=True)
            done: list[int] = []
            specs: list[dict[str, Any]] = []
            span = 0  # rows the ranges can hold at most
            for entry_id, ranges in conn.execute(query).all():
                if done and span >= max_rows:
                    break
                for device_id, stream, first, last, *times in ranges:  # no times: an entry of rebuild or before
                    lo, hi = times if times else (None, None)
                    specs.append({"d": device_id, "s": stream, "a": first, "b": last, "id": entry_id, "lo": lo,
                                  "hi": hi})
                    span += last - first + 1
                done.append(entry_id)
            if not done:
                return 0
            folded = self.fold_in(conn, specs)
            for i in range(0, len(done), IN_CHUNK):
                conn.execute(sa.delete(metric_backlog).where(metric_backlog.c.id.in_(done[i : i + IN_CHUNK])))
        return folded

    def follow_all(self, max_rows: int = 20_000) -> int:
        """Run ``follow`` until the backlog is empty (tests, tools); rows folded."""
        total = 0
        while True:
            with self._db.transaction("reading the metric backlog") as conn:
                if conn.execute(sa.select(metric_backlog.c.id).limit(1)).first() is None:
                    return total
            total += self.follow(max_rows)

    def backlog(self) -> dict[str, int | None]:
        """How far the follower is behind: backlog ``entries`` and the ``oldest_ms`` one's arrival (None if none)."""
        with self._db.transaction("reading the metric backlog", snapshot=True) as conn:
            n, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(metric_backlog.c.received_ms))).one()
        return {"entries": int(n), "oldest_ms": None if oldest is None else int(oldest)}

    def rebuild(self, now_ms: int) -> int:
        """Forget every point and rollup and fold all stored metrics rows again (through the follower, which
        catches up afterwards); the backlog entries made, one per (device, stream)."""
        with self._db.transaction("rebuilding metrics", immediate=True) as conn:
            for table in (metric_points, metric_rollups, metric_backlog):
                conn.execute(sa.delete(table))
            t = telemetry.c
            spans = conn.execute(
                sa.select(t.device_id, t.stream, sa.func.min(t.seq), sa.func.max(t.seq))
                .where(t.kind == METRICS_KIND).group_by(t.device_id, t.stream).order_by(t.device_id, t.stream)
            ).all()
            for device_id, stream, first, last in spans:
                entry = conn.execute(
                    sa.insert(metric_backlog).values(ranges=[[device_id, stream, int(first), int(last)]],
                                                     received_ms=now_ms).returning(metric_backlog.c.id)
                ).scalar_one()
                conn.execute(sa.update(telemetry).where(t.device_id == device_id, t.stream == stream,
                                                        t.kind == METRICS_KIND).values(ingest_id=entry))
        return len(spans)

    def fold_in(self, conn: sa.Connection, specs: Sequence[Mapping[str, Any]]) -> int:
        """Points and rollups of the stored rows ``specs`` name ({"d", "s", "a", "b", "id", "lo", "hi"}: device,
        stream, seq range, ingest_id, sample times or None), in the caller's transaction, which folds each once;
        the rows folded."""
        return fold(conn, specs)

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

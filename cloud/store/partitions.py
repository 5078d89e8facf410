"""Telemetry by day on PostgreSQL, and telemetry retention: partitions made ahead, old ones dropped whole.

    plan = plan_partitions(existing_days, now_ms, keep_ms=90 * DAY_MS, ahead_days=3)   # no I/O
    done = partitions.maintain(now_ms, keep_ms=90 * DAY_MS)   # {"created": n, "dropped": n, "deleted": n}

On PostgreSQL ``telemetry`` is ``PARTITION BY RANGE (ts_ms)`` (migration 11): one partition per UTC day,
named ``telemetry_YYYYMMDD``, and ``telemetry_default`` for what no day partition holds (clocks far off,
history from before migration 11, a day written before its partition was made). ``ts_ms`` is the record's
sample time, which a resent record keeps, so a resend lands in the partition of the first copy and the
primary key (device_id, stream, seq, ts_ms) finds it: each record is stored once.

``maintain`` (the leader's fleet job, ``cloud.fleet.jobs``) makes the day partitions from today to
``ahead_days`` ahead that are missing; rows the default partition already holds for such a day move into
it in the same transaction. With ``keep_ms`` it then drops every day partition wholly older than
``now - keep_ms`` (one ``DROP TABLE``, no row is read) and deletes the default partition's older rows.
On SQLite there are no partitions: retention is one row ``DELETE``. ``keep_ms`` None keeps everything.
Making partitions holds off writers to ``telemetry`` for the transaction (an insert routed by the partitions
as they were before an ATTACH would fail); dropping them locks it exclusively for a moment. Each step takes
its locks with a 5 s ``lock_timeout``: under an ingest backlog it fails (StoreError) and runs again at the
job's next time rather than stalling ingest behind it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from cloud.store.database import Database

__all__ = ["DAY_MS", "DEFAULT_PARTITION", "PartitionPlan", "TelemetryPartitions", "partition_name", "plan_partitions"]

DAY_MS = 86_400_000
DEFAULT_PARTITION = "telemetry_default"
_NAME = re.compile(r"^telemetry_(\d{8})$")
_EPOCH = dt.date(1970, 1, 1)
_LIST = ("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
         " WHERE i.inhparent = CAST('telemetry' AS regclass)")


def partition_name(day: int) -> str:
    """The partition of UTC day ``day`` (days since 1970-01-01): ``telemetry_YYYYMMDD``."""
    return f"telemetry_{(_EPOCH + dt.timedelta(days=day)):%Y%m%d}"


def _day_of(name: str) -> int | None:
    match = _NAME.match(name)
    if match is None:
        return None
    return (dt.datetime.strptime(match[1], "%Y%m%d").date() - _EPOCH).days


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """Day partitions to make and to drop (days since 1970-01-01, UTC), and the retention cutoff (None: keep all)."""

    create: tuple[int, ...]
    drop: tuple[int, ...]
    cutoff_ms: int | None


def plan_partitions(existing_days: Iterable[int], now_ms: int, keep_ms: int | None, ahead_days: int) -> PartitionPlan:
    """Which day partitions to make (today to ``ahead_days`` ahead, where missing) and to drop (every one whose
    day ended at or before ``now_ms - keep_ms``)."""
    if keep_ms is not None and keep_ms <= 0:
        raise ValueError(f"telemetry retention must be a positive number of ms or None, got {keep_ms!r}")
    existing = set(existing_days)
    today = now_ms // DAY_MS
    create = tuple(d for d in range(today, today + ahead_days + 1) if d not in existing)
    if keep_ms is None:
        return PartitionPlan(create, (), None)
    cutoff = now_ms - keep_ms
    drop = tuple(sorted(d for d in existing if (d + 1) * DAY_MS <= cutoff))
    return PartitionPlan(create, drop, cutoff)


class TelemetryPartitions:
    """Day partitions of ``telemetry`` (PostgreSQL) and telemetry retention (both databases)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def days(self) -> list[int]:
        """The days that have a partition (PostgreSQL; empty on SQLite)."""
        with self._db.transaction("listing telemetry partitions", snapshot=True) as conn:
            if conn.dialect.name != "postgresql":
                return []
            names = conn.exec_driver_sql(_LIST).scalars().all()
        return sorted(d for d in map(_day_of, names) if d is not None)

    def maintain(self, now_ms: int, keep_ms: int | None, ahead_days: int = 3) -> dict[str, int]:
        """Make the day partitions due, drop those retention no longer keeps, delete older rows the default
        partition (or SQLite's table) holds; what was done: partitions created and dropped, rows deleted."""
        plan = plan_partitions(self.days(), now_ms, keep_ms, ahead_days)
        deleted = 0
        with self._db.transaction("telemetry partitions and retention") as conn:
            if conn.dialect.name != "postgresql":
                if plan.cutoff_ms is not None:
                    deleted = conn.exec_driver_sql("DELETE FROM telemetry WHERE ts_ms < ?", (plan.cutoff_ms,)).rowcount
                return {"created": 0, "dropped": 0, "deleted": deleted}
            # locks in ingest's order (the parent, then a partition), so neither waits on the other in a cycle
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            created: list[int] = []
            if plan.create:
                # writers wait meanwhile (reads do not): an INSERT routed with the partitions as they were before
                # the ATTACH would put a row of the new day into the default partition and fail its constraint
                conn.exec_driver_sql("LOCK TABLE telemetry IN SHARE ROW EXCLUSIVE MODE")
                conn.exec_driver_sql(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")  # not upgraded later
                # again under the lock: another coordinator (starting beside this one) may have made them meanwhile
                have = {d for d in map(_day_of, conn.exec_driver_sql(_LIST).scalars().all()) if d is not None}
                created = [day for day in plan.create if day not in have]
            for day in created:
                _create(conn, day)
        if plan.cutoff_ms is None:
            return {"created": len(created), "dropped": 0, "deleted": 0}
        with self._db.transaction("telemetry retention") as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            if plan.drop:  # DROP of a partition locks the parent exclusively: taken first (ingest waits briefly)
                conn.exec_driver_sql("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE")
            for day in plan.drop:
                conn.exec_driver_sql(f"DROP TABLE {partition_name(day)}")
            deleted = conn.exec_driver_sql(
                f"DELETE FROM {DEFAULT_PARTITION} WHERE ts_ms < %(c)s", {"c": plan.cutoff_ms}).rowcount
        return {"created": len(created), "dropped": len(plan.drop), "deleted": deleted}


def _create(conn: sa.Connection, day: int) -> None:
    """Day ``day``'s partition, with the rows the default partition holds for it moved in, in the caller's
    transaction (ATTACH builds the parent's indexes on it and checks the default holds none of its rows)."""
    name, lo, hi = partition_name(day), day * DAY_MS, (day + 1) * DAY_MS
    bounds = {"lo": lo, "hi": hi}
    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE telemetry INCLUDING DEFAULTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts_ms >= %(lo)s AND ts_ms < %(hi)s RETURNING *)"
        f" INSERT INTO {name} SELECT * FROM moved", bounds)
    conn.exec_driver_sql(f"ALTER TABLE telemetry ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")

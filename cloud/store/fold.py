"""The metrics follower's fold as set-based SQL: stored ``metrics`` rows to raw points and rollups, in the database.

    rows = fold(conn, [{"d": device_id, "s": stream, "a": first_seq, "b": last_seq, "id": ingest_id,
                        "lo": first_ts_ms, "hi": last_ts_ms}, ...])   # lo, hi None: any sample time

A few statements over three temporary tables, whatever the number of rows: the telemetry rows each
range names (tagged with its ``ingest_id``; on PostgreSQL within the specs' sample times too, so only the
day partitions of ``telemetry`` they fall in are read, ``cloud.store.partitions``) are copied out, their
numeric values become samples (``json_each`` on SQLite, ``jsonb_each`` on PostgreSQL; the wire admits only finite numbers and
strings, so every number is a sample), the samples become raw points (``ON CONFLICT DO NOTHING``: the
first of one (device, metric, ms) is kept) and are grouped into minute buckets, the minutes into hour
buckets, each merged into the stored ones (count and sum added, min and max kept). No value passes
through Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.fleet.rollup import HOUR_MS, MINUTE_MS

__all__ = ["fold"]

_SQLITE = {
    "tables": [
        "CREATE TEMP TABLE IF NOT EXISTS fold_rows (device_id TEXT, ts_ms INTEGER, v TEXT)",
        "CREATE TEMP TABLE IF NOT EXISTS fold_samples (device_id TEXT, metric TEXT, ts_ms INTEGER, value REAL)",
        "CREATE TEMP TABLE IF NOT EXISTS fold_minutes (device_id TEXT, metric TEXT, start_ms INTEGER, count INTEGER,"
        " min REAL, max REAL, sum REAL)",
        "DELETE FROM temp.fold_rows",
        "DELETE FROM temp.fold_samples",
        "DELETE FROM temp.fold_minutes",
    ],
    "rows": (
        'INSERT INTO temp.fold_rows SELECT t.device_id, t.ts_ms, t."values" FROM json_each(:specs) r CROSS JOIN telemetry t'
        " ON t.device_id = json_extract(r.value, '$.d') AND t.stream = json_extract(r.value, '$.s')"
        " AND t.seq BETWEEN json_extract(r.value, '$.a') AND json_extract(r.value, '$.b')"
        " WHERE t.ingest_id = json_extract(r.value, '$.id') AND t.kind = 'metrics'"
    ),
    "samples": (
        "INSERT INTO temp.fold_samples SELECT f.device_id, j.key, f.ts_ms, j.value FROM temp.fold_rows f, json_each(f.v) j"
        " WHERE j.type IN ('integer', 'real')"
    ),
    "points": (
        "INSERT INTO metric_points (device_id, metric, ts_ms, value) SELECT device_id, metric, ts_ms, value"
        " FROM temp.fold_samples WHERE true ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING"
    ),
    "minutes": (
        "INSERT INTO temp.fold_minutes SELECT device_id, metric, ts_ms - ((ts_ms % :w) + :w) % :w AS start, count(*),"
        " min(value), max(value), sum(value) FROM temp.fold_samples GROUP BY device_id, metric, start"
    ),
    "rollups": (
        "INSERT INTO metric_rollups (device_id, metric, width_ms, start_ms, count, min, max, sum)"
        " SELECT device_id, metric, :w, start_ms - ((start_ms % :w) + :w) % :w AS start, sum(count), min(min), max(max),"
        " sum(sum) FROM temp.fold_minutes WHERE true GROUP BY device_id, metric, start ORDER BY 1, 2, 4"
        " ON CONFLICT (device_id, metric, width_ms, start_ms) DO UPDATE SET count = count + excluded.count,"
        " sum = sum + excluded.sum, min = min(min, excluded.min), max = max(max, excluded.max)"
    ),
}
_POSTGRES = {
    "tables": [
        "CREATE TEMPORARY TABLE IF NOT EXISTS fold_rows (device_id text, ts_ms bigint, v jsonb) ON COMMIT DELETE ROWS",
        "CREATE TEMPORARY TABLE IF NOT EXISTS fold_samples (device_id text, metric text, ts_ms bigint, value float8)"
        " ON COMMIT DELETE ROWS",
        "CREATE TEMPORARY TABLE IF NOT EXISTS fold_minutes (device_id text, metric text, start_ms bigint, count bigint,"
        " min float8, max float8, sum float8) ON COMMIT DELETE ROWS",
    ],
    "rows": (
        'INSERT INTO pg_temp.fold_rows SELECT t.device_id, t.ts_ms, t."values"'
        " FROM jsonb_to_recordset(CAST(:specs AS jsonb)) AS r(d text, s text, a bigint, b bigint, id bigint)"
        " JOIN telemetry t ON t.device_id = r.d AND t.stream = r.s AND t.seq BETWEEN r.a AND r.b AND t.ingest_id = r.id"
        " WHERE t.kind = 'metrics' AND t.ts_ms BETWEEN :lo AND :hi"  # the partitions of these times only
    ),
    "samples": (
        "INSERT INTO pg_temp.fold_samples SELECT f.device_id, j.key, f.ts_ms, (j.value)::float8"
        " FROM pg_temp.fold_rows f, jsonb_each(f.v) j WHERE jsonb_typeof(j.value) = 'number'"
    ),
    "points": (
        "INSERT INTO metric_points (device_id, metric, ts_ms, value) SELECT device_id, metric, ts_ms, value"
        " FROM pg_temp.fold_samples ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING"
    ),
    "minutes": (
        "INSERT INTO pg_temp.fold_minutes SELECT device_id, metric, ts_ms - ((ts_ms % :w) + :w) % :w, count(*),"
        " min(value), max(value), sum(value) FROM pg_temp.fold_samples GROUP BY 1, 2, 3"
    ),
    "rollups": (
        "INSERT INTO metric_rollups (device_id, metric, width_ms, start_ms, count, min, max, sum)"
        " SELECT device_id, metric, CAST(:w AS bigint), start_ms - ((start_ms % :w) + :w) % :w, sum(count), min(min),"
        " max(max), sum(sum) FROM pg_temp.fold_minutes GROUP BY 1, 2, 4 ORDER BY 1, 2, 4"
        " ON CONFLICT (device_id, metric, width_ms, start_ms) DO UPDATE SET count = metric_rollups.count + excluded.count,"
        " sum = metric_rollups.sum + excluded.sum, min = LEAST(metric_rollups.min, excluded.min),"
        " max = GREATEST(metric_rollups.max, excluded.max)"
    ),
}


def fold(conn: sa.Connection, specs: Sequence[Mapping[str, Any]]) -> int:
    """Points and rollups of the rows ``specs`` name, in the caller's transaction; the telemetry rows folded."""
    sql = _SQLITE if conn.dialect.name == "sqlite" else _POSTGRES
    for statement in sql["tables"]:
        conn.exec_driver_sql(statement)
    lows, highs = [spec.get("lo") for spec in specs], [spec.get("hi") for spec in specs]
    bounded = None not in lows and None not in highs
    lo, hi = (min(lows), max(highs)) if bounded and specs else (-(2**63), 2**63 - 1)
    rows = conn.execute(sa.text(sql["rows"]), {"specs": json.dumps(list(specs)), "lo": lo, "hi": hi}).rowcount
    if rows:
        conn.execute(sa.text(sql["samples"]))
        conn.execute(sa.text(sql["points"]))
        conn.execute(sa.text(sql["minutes"]), {"w": MINUTE_MS})  # hours are made of the minutes
        for width in (MINUTE_MS, HOUR_MS):
            conn.execute(sa.text(sql["rollups"]), {"w": width})
    return rows

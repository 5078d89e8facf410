"""The coordination statements: the lease claim, the fence, gateway sessions, wake-ups and the leader's tail.

Each function runs one short statement on a connection the caller gives (a transaction of
``cloud.store.Database``) or on the engine. The lease statements are PostgreSQL's (the clock
is the database's: ``clock_timestamp()``); on SQLite there is one coordinator and no lease.

The claim is one ``INSERT .. ON CONFLICT DO UPDATE .. WHERE``: it renews the row when the caller
names the current token, takes it with the token plus one when it has expired, and otherwise
changes nothing and returns no row. ``check_fence`` reads the token ``FOR SHARE`` inside a
leader-only transaction: a takeover (which updates the row) waits for that transaction to end,
and a transaction that starts after the takeover sees the new token and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from common.errors import FencedOff

__all__ = ["COMMANDS_CHANNEL", "LEADER", "PLANS_CHANNEL", "check_fence", "claim", "holder_of", "lease_row", "notify_commands",
           "gateways_seen_since", "record_session", "release", "session_holder", "stored_since"]

LEADER = "leader"  # the one lease: leader-only work
COMMANDS_CHANNEL = "edgefleet_commands"  # NOTIFY payload: a gateway id whose commands changed
PLANS_CHANNEL = "edgefleet_plans"  # NOTIFY payload: a gateway id whose coordinated rollouts' site plans changed

_DB_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

_CLAIM = sa.text(f"""
INSERT INTO coordinator_leases AS l (name, holder, token, expires_ms, holder_api)
VALUES (:name, :holder, 1, {_DB_NOW} + :ttl_ms, :api)
ON CONFLICT (name) DO UPDATE SET
  token = CASE WHEN l.holder = EXCLUDED.holder AND l.token = :token THEN l.token ELSE l.token + 1 END,
  holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms, holder_api = EXCLUDED.holder_api
WHERE (l.holder = EXCLUDED.holder AND l.token = :token) OR l.expires_ms <= EXCLUDED.expires_ms - :ttl_ms
RETURNING l.token
""")


def claim(conn: sa.Connection, holder: str, token: int, ttl_ms: int, api: str = "", name: str = LEADER) -> int | None:
    """Renew (``token`` current) or take (expired) the lease: the token granted, or None (held by another).

    A lease held by another and not expired is seen with a plain read first: the upsert locks the row even
    when it changes nothing, and a follower's claim every second would queue the leader's fenced writes."""
    seen = lease_row(conn, name)
    if seen is not None and seen["expires_ms"] > seen["now_ms"] and (seen["holder"] != holder or seen["token"] != token):
        return None
    row = conn.execute(_CLAIM, {"name": name, "holder": holder, "token": token, "ttl_ms": ttl_ms, "api": api}).first()
    return None if row is None else int(row[0])


def release(conn: sa.Connection, holder: str, token: int, name: str = LEADER) -> bool:
    """Expire the lease now if ``holder`` still holds ``token`` (a clean stop: the next claim takes it)."""
    res = conn.execute(sa.text("UPDATE coordinator_leases SET expires_ms = 0 WHERE name = :name AND holder = :holder "
                               "AND token = :token"), {"name": name, "holder": holder, "token": token})
    return res.rowcount == 1


def lease_row(conn: sa.Connection, name: str = LEADER) -> dict[str, Any] | None:
    """The lease as stored, with the database's clock: holder, token, expires_ms, holder_api, now_ms."""
    row = conn.execute(sa.text(f"SELECT holder, token, expires_ms, holder_api, {_DB_NOW} AS now_ms "
                               "FROM coordinator_leases WHERE name = :name"), {"name": name}).mappings().first()
    return None if row is None else dict(row)


def holder_of(conn: sa.Connection, name: str = LEADER) -> str:
    """Who holds the lease now (empty when nobody does or it expired)."""
    row = lease_row(conn, name)
    return str(row["holder"]) if row is not None and row["expires_ms"] > row["now_ms"] else ""


def check_fence(conn: sa.Connection, holder: str, token: int, name: str = LEADER) -> None:
    """Inside a leader-only transaction: raise ``FencedOff`` unless ``token`` is the lease's current one."""
    row = conn.execute(sa.text("SELECT token FROM coordinator_leases WHERE name = :name FOR SHARE"),
                       {"name": name}).first()
    current = 0 if row is None else int(row[0])
    if current != token:
        raise FencedOff(holder, token, current)


def record_session(conn: sa.Connection, gateway_id: str, coordinator_id: str, now_ms: int) -> None:
    """``coordinator_id`` now holds ``gateway_id``'s session (its last Hello went there)."""
    params = {"gw": gateway_id, "c": coordinator_id, "now": now_ms}
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("INSERT INTO gateway_sessions (gateway_id, coordinator_id, since_ms) VALUES (:gw, :c, :now) "
                             "ON CONFLICT (gateway_id) DO UPDATE SET coordinator_id = EXCLUDED.coordinator_id, "
                             "since_ms = EXCLUDED.since_ms"), params)
    else:
        conn.execute(sa.text("INSERT OR REPLACE INTO gateway_sessions (gateway_id, coordinator_id, since_ms) "
                             "VALUES (:gw, :c, :now)"), params)


def session_holder(conn: sa.Connection, gateway_id: str) -> str:
    """The coordinator holding ``gateway_id``'s session ("" if none ever did)."""
    row = conn.execute(sa.text("SELECT coordinator_id FROM gateway_sessions WHERE gateway_id = :gw"),
                       {"gw": gateway_id}).first()
    return "" if row is None else str(row[0])


def notify_commands(conn: sa.Connection, gateway_ids: Sequence[str], channel: str = COMMANDS_CHANNEL) -> None:
    """Wake the coordinator holding each gateway's session: its commands (or site plans) changed (at commit)."""
    for gw in dict.fromkeys(gateway_ids):
        conn.execute(sa.text("SELECT pg_notify(:channel, :gw)"), {"channel": channel, "gw": gw})


def stored_since(conn: sa.Connection, since_ms: int, limit: int,
                 own: Sequence[int] = ()) -> tuple[list[dict[str, Any]], int | None]:
    """Telemetry stored (``received_ms``) at or after ``since_ms``, oldest first, with each device's site and gateway,
    but for the rows of the ingest transactions ``own`` (the leader fed those itself); and the newest arrival at or
    after ``since_ms`` of any row, own ones included (None: none)."""
    q = sa.text('SELECT t.device_id, t.stream, t.seq, t.ts_ms, t.kind, t."values", t.received_ms, '
                "d.site_id, d.gateway_id FROM telemetry t JOIN devices d ON d.device_id = t.device_id "
                "WHERE t.received_ms >= :since AND (t.ingest_id IS NULL OR t.ingest_id <> ALL(CAST(:own AS bigint[]))) "
                "ORDER BY t.received_ms LIMIT :limit")
    # by the received_ms index always: a day partition not yet analyzed (its first minute; a benchmark's whole run)
    # has no statistics, and the planner's guess read all of it every tail interval
    conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
    rows = [dict(r) for r in conn.execute(q, {"since": since_ms, "limit": limit, "own": list(own)}).mappings()]
    newest = conn.execute(sa.text("SELECT max(received_ms) FROM telemetry WHERE received_ms >= :since"),
                          {"since": since_ms}).scalar()
    conn.execute(sa.text("SET LOCAL enable_seqscan = on"))
    return rows, None if newest is None else int(newest)


def gateways_seen_since(conn: sa.Connection, since_ms: int) -> list[dict[str, Any]]:
    """Gateways any coordinator heard from at or after ``since_ms``: last_seen_ms, status, status_ts_ms."""
    q = sa.text("SELECT gateway_id, last_seen_ms, status, status_ts_ms FROM gateways WHERE last_seen_ms >= :since")
    return [dict(r) for r in conn.execute(q, {"since": since_ms}).mappings()]

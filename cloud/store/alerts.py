"""The store's alert records: alerts (open and resolved, with acknowledgements) and silences.

    alerts.save_alerts(rows)                       # upsert from the alert service; resolved is final
    alerts.list_alerts("open"); alerts.get_alert(alert_id)
    alerts.ack_alert(alert_id, "alice", now_ms)    # None for an unknown id
    alerts.add_silence("battery_low", until_ms, "alice", "planned swap", now_ms)
    alerts.active_silences(now_ms)

Alerts a gateway raised while its uplink was down arrive in a batch: ingest keeps them
with ``ingest_site_alerts_in`` in its own transaction.

Alert rows are written by the cloud's alert service only; operators only add an
acknowledgement, which a later upsert from the service never overwrites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.store.database import Database
from cloud.store.schema import ALERT_STATES, alerts, silences

__all__ = ["ALERT_COLUMNS", "AlertRecords"]

ALERT_COLUMNS = ("id", "rule", "type", "subject", "severity", "state", "opened_ms", "resolved_ms",
                 "last_event", "last_event_ms", "detail")
"""The columns ``save_alerts`` writes (``acked_by`` and ``acked_ms`` belong to operators)."""

_UPDATED = ("state", "resolved_ms", "last_event", "last_event_ms", "detail")
_MAX_LIST = 10_000


class AlertRecords:
    """Alerts and silences."""

    def __init__(self, db: Database) -> None:
        self._db = db


    def save_alerts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or update alerts by id in one transaction; a resolved alert is never reopened."""
        if not rows:
            return
        for row in rows:
            if row["state"] not in ALERT_STATES:
                raise ValueError(f"alert {row['id']!r}: state {row['state']!r} is not one of {', '.join(ALERT_STATES)}")
        ins = self._db.insert(alerts)
        stmt = ins.on_conflict_do_update(
            index_elements=[alerts.c.id],
            set_={name: ins.excluded[name] for name in _UPDATED},
            where=alerts.c.state == "open",
        )
        with self._db.transaction(f"saving {len(rows)} alerts") as conn:
            conn.execute(stmt, [{k: row[k] for k in ALERT_COLUMNS} for row in sorted(rows, key=lambda r: r["id"])])

    def list_alerts(self, state: str = "open", *, subject: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Alerts in ``state`` ("open", "resolved" or "all"), newest first, at most ``limit``."""
        if state not in (*ALERT_STATES, "all"):
            raise ValueError(f"alert state {state!r} is not one of open, resolved, all")
        query = sa.select(alerts)
        if state != "all":
            query = query.where(alerts.c.state == state)
        if subject is not None:
            query = query.where(alerts.c.subject == subject)
        query = query.order_by(alerts.c.opened_ms.desc(), alerts.c.id).limit(max(1, min(limit, _MAX_LIST)))
        with self._db.transaction(f"listing {state} alerts", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        with self._db.transaction(f"reading alert {alert_id!r}") as conn:
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        return dict(row) if row is not None else None

    def ack_alert(self, alert_id: str, by: str, now_ms: int) -> dict[str, Any] | None:
        """Record that ``by`` is handling the alert (a later ack replaces the earlier); None if unknown."""
        with self._db.transaction(f"acknowledging alert {alert_id!r}") as conn:
            conn.execute(sa.update(alerts).where(alerts.c.id == alert_id).values(acked_by=by, acked_ms=now_ms))
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        return dict(row) if row is not None else None

    def add_silence(self, target: str, until_ms: int, by: str, reason: str, now_ms: int) -> dict[str, Any]:
        """Record a silence of ``target`` (a rule name or a subject) until ``until_ms``; return its row."""
        row = {"target": target, "until_ms": until_ms, "created_ms": now_ms, "created_by": by, "reason": reason}
        with self._db.transaction(f"silencing {target!r}") as conn:
            silence_id = conn.execute(sa.insert(silences).values(**row).returning(silences.c.id)).scalar_one()
        return {"id": silence_id, **row}

    def active_silences(self, now_ms: int) -> list[dict[str, Any]]:
        """Silences that have not ended at ``now_ms``, by target and end."""
        query = sa.select(silences).where(silences.c.until_ms > now_ms).order_by(silences.c.target, silences.c.until_ms)
        with self._db.transaction("listing silences", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def ingest_site_alerts_in(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Alerts a gateway raised while its uplink was down; returns the rows that changed something (a new
        alert, or an open one resolved), to announce once. A resolved alert is final; a resend changes nothing."""
        changed = []
        for row in sorted(rows, key=lambda r: (r["last_event_ms"], r["state"] == "resolved", r["id"])):
            old = conn.execute(sa.select(alerts.c.state).where(alerts.c.id == row["id"])).scalar_one_or_none()
            if old == "resolved" or (old == "open" and row["state"] == "open"):
                continue
            if old is None:
                conn.execute(sa.insert(alerts).values(**row))
            else:
                conn.execute(sa.update(alerts).where(alerts.c.id == row["id"]).values(
                    state="resolved", resolved_ms=row["resolved_ms"], last_event="resolved",
                    last_event_ms=row["last_event_ms"]))
            changed.append(dict(row))
        return changed

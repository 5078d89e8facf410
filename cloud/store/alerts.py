"""The store's alert records: alerts (open and resolved, with acknowledgements) and silences.

``AlertRecords`` is a part of ``Store`` (it needs the store's ``_transaction`` and
``_insert``); it is kept apart because the store's own module is long enough.

    store.save_alerts(rows)                       # upsert from the alert service; resolved is final
    store.list_alerts("open"); store.get_alert(alert_id)
    store.ack_alert(alert_id, "alice", now_ms)    # None for an unknown id
    store.add_silence("battery_low", until_ms, "alice", "planned swap", now_ms)
    store.active_silences(now_ms)
    store.devices_in_state("maintenance")         # [] while the store has no lifecycle states

Alert rows are written by the cloud's alert service only; operators only add an
acknowledgement, which a later upsert from the service never overwrites.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa

from cloud.store.schema import ALERT_STATES, alerts, devices, silences

__all__ = ["ALERT_COLUMNS", "AlertRecords"]

ALERT_COLUMNS = ("id", "rule", "type", "subject", "severity", "state", "opened_ms", "resolved_ms",
                 "last_event", "last_event_ms", "detail")
"""The columns ``save_alerts`` writes (``acked_by`` and ``acked_ms`` belong to operators)."""

_UPDATED = ("state", "resolved_ms", "last_event", "last_event_ms", "detail")
_MAX_LIST = 10_000


class AlertRecords:
    """Alert and silence methods of ``Store``."""

    _transaction: Callable[..., AbstractContextManager[sa.Connection]]
    _insert: Any

    def save_alerts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or update alerts by id in one transaction; a resolved alert is never reopened."""
        if not rows:
            return
        for row in rows:
            if row["state"] not in ALERT_STATES:
                raise ValueError(f"alert {row['id']!r}: state {row['state']!r} is not one of {', '.join(ALERT_STATES)}")
        ins = self._insert(alerts)
        stmt = ins.on_conflict_do_update(
            index_elements=[alerts.c.id],
            set_={name: ins.excluded[name] for name in _UPDATED},
            where=alerts.c.state == "open",
        )
        with self._transaction(f"saving {len(rows)} alerts") as conn:
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
        with self._transaction(f"listing {state} alerts", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        with self._transaction(f"reading alert {alert_id!r}") as conn:
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        return dict(row) if row is not None else None

    def ack_alert(self, alert_id: str, by: str, now_ms: int) -> dict[str, Any] | None:
        """Record that ``by`` is handling the alert (a later ack replaces the earlier); None if unknown."""
        with self._transaction(f"acknowledging alert {alert_id!r}") as conn:
            conn.execute(sa.update(alerts).where(alerts.c.id == alert_id).values(acked_by=by, acked_ms=now_ms))
            row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        return dict(row) if row is not None else None

    def add_silence(self, target: str, until_ms: int, by: str, reason: str, now_ms: int) -> dict[str, Any]:
        """Record a silence of ``target`` (a rule name or a subject) until ``until_ms``; return its row."""
        row = {"target": target, "until_ms": until_ms, "created_ms": now_ms, "created_by": by, "reason": reason}
        with self._transaction(f"silencing {target!r}") as conn:
            silence_id = conn.execute(sa.insert(silences).values(**row).returning(silences.c.id)).scalar_one()
        return {"id": silence_id, **row}

    def active_silences(self, now_ms: int) -> list[dict[str, Any]]:
        """Silences that have not ended at ``now_ms``, by target and end."""
        query = sa.select(silences).where(silences.c.until_ms > now_ms).order_by(silences.c.target, silences.c.until_ms)
        with self._transaction("listing silences", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def devices_in_state(self, state: str) -> list[str]:
        """Devices whose lifecycle ``state`` column equals ``state``; [] while devices have no such column."""
        with self._transaction(f"devices in state {state!r}", snapshot=True) as conn:
            if "state" not in {c["name"] for c in sa.inspect(conn).get_columns(devices.name)}:
                return []
            lifecycle = sa.table(devices.name, sa.column("device_id"), sa.column("state"))
            query = sa.select(lifecycle.c.device_id).where(lifecycle.c.state == state).order_by(lifecycle.c.device_id)
            return list(conn.execute(query).scalars())

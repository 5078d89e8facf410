"""The store's rollout records: a rollout's plan and engine header, and one row per targeted device.

The rollout service (``cloud.rollouts.service``) is handed these records. The engine's ``Persist``
effect is saved by ``save_rollout_step`` in one transaction, before the effects after it run.

    rollouts.create_rollout(row); rollouts.save_rollout_step(rollout_id, header, device_rows, now_ms)
    rollouts.get_rollout(id); rollouts.list_rollouts(); rollouts.rollout_devices(id)
    rollouts.active_rollout_devices(); rollouts.gateway_sites()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.store.database import Database
from cloud.store.schema import gateways, rollout_devices, rollouts

__all__ = ["RolloutRecords"]

ACTIVE = ("draft", "scheduled", "running", "paused")


class RolloutRecords:
    """Rollouts and the devices they target."""

    def __init__(self, db: Database) -> None:
        self._db = db


    def create_rollout(self, row: Mapping[str, Any]) -> bool:
        """A new rollout (rollout_id, release_version, plan, header, install_args, created_ms); False if the id exists."""
        with self._db.transaction(f"creating rollout {row['rollout_id']!r}", immediate=True) as conn:
            if conn.execute(sa.select(rollouts.c.rollout_id).where(rollouts.c.rollout_id == row["rollout_id"])).first():
                return False
            header = row["header"]
            conn.execute(sa.insert(rollouts).values(
                rollout_id=row["rollout_id"], release_version=row["release_version"], state=header["state"],
                reason=header.get("reason", ""), plan=row["plan"], header=header, install_args=row["install_args"],
                created_ms=row["created_ms"], updated_ms=row["created_ms"]))
        return True

    def save_rollout_step(self, rollout_id: str, header: Mapping[str, Any], device_rows: Sequence[Mapping[str, Any]],
                          now_ms: int) -> None:
        """The engine's Persist effect: its header and the device records that changed, in one transaction."""
        with self._db.transaction(f"saving rollout {rollout_id!r}") as conn:
            conn.execute(sa.update(rollouts).where(rollouts.c.rollout_id == rollout_id).values(
                state=header["state"], reason=header.get("reason", ""), header=dict(header), updated_ms=now_ms))
            if not device_rows:
                return
            ids = [d["device_id"] for d in device_rows]
            conn.execute(sa.delete(rollout_devices).where(
                rollout_devices.c.rollout_id == rollout_id, rollout_devices.c.device_id.in_(ids)))
            conn.execute(sa.insert(rollout_devices), [
                {"rollout_id": rollout_id, "device_id": d["device_id"], "site_id": d["site"], "stage": d["stage"],
                 "state": d["state"], "reason": d.get("reason", ""), "record": dict(d)} for d in device_rows])

    def get_rollout(self, rollout_id: str) -> dict[str, Any] | None:
        with self._db.transaction(f"reading rollout {rollout_id!r}", snapshot=True) as conn:
            row = conn.execute(sa.select(rollouts).where(rollouts.c.rollout_id == rollout_id)).mappings().first()
            return dict(row) if row else None

    def list_rollouts(self, states: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every rollout (or those in ``states``), oldest first."""
        query = sa.select(rollouts).order_by(rollouts.c.created_ms, rollouts.c.rollout_id)
        if states:
            query = query.where(rollouts.c.state.in_(list(states)))
        with self._db.transaction("listing rollouts", snapshot=True) as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def rollout_devices(self, rollout_id: str) -> list[dict[str, Any]]:
        """The engine's device records of one rollout (``record`` of each row), by device id."""
        query = sa.select(rollout_devices.c.record).where(rollout_devices.c.rollout_id == rollout_id)
        with self._db.transaction(f"devices of rollout {rollout_id!r}", snapshot=True) as conn:
            return sorted((dict(r) for r in conn.execute(query).scalars()), key=lambda d: d["device_id"])

    def active_rollout_devices(self) -> list[dict[str, Any]]:
        """For the conflict rule: each active rollout with the ids of the devices it holds (not skipped)."""
        out = {r["rollout_id"]: {"id": r["rollout_id"], "state": r["state"], "created_ms": r["created_ms"], "devices": []}
               for r in self.list_rollouts(ACTIVE)}
        if not out:
            return []
        query = sa.select(rollout_devices.c.rollout_id, rollout_devices.c.device_id).where(
            rollout_devices.c.rollout_id.in_(list(out)), rollout_devices.c.state != "skipped")
        with self._db.transaction("devices of active rollouts", snapshot=True) as conn:
            for rid, did in conn.execute(query):
                out[rid]["devices"].append(did)
        return list(out.values())

    def gateway_sites(self) -> dict[str, str]:
        """gateway id -> the site it serves (for sending a site's rollout plan to its gateways)."""
        with self._db.transaction("gateway sites", snapshot=True) as conn:
            return {g: s for g, s in conn.execute(sa.select(gateways.c.gateway_id, gateways.c.site_id))}

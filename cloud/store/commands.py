"""The store's downlink commands: queued by the cloud, moved forward by what gateways and devices report.

    seq = commands.create_command("d1", "reboot", {}, expires_ms, now_ms)   # the device's next number
    commands.commands_for(["d1"]); commands.commands_for_gateway("gw-1")   # to push to a gateway
    commands.mark_command("d1", seq, "held", "held by gw-1", now_ms)      # never backwards
    commands.expire_commands(now_ms); commands.list_commands("d1")

A command's statuses and their order are ``cloud.store.schema.COMMAND_STATUSES`` and
``cloud.store.batch.statuses_before``: a late "held" never undoes "delivered"; done, failed
and expired are final. Ingest moves reported commands forward with ``advance_in`` inside
its own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from cloud.store.batch import statuses_before
from cloud.store.database import IN_CHUNK, Database
from cloud.store.schema import commands, devices

__all__ = ["CommandRecords"]


class CommandRecords:
    """Downlink commands of devices."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def advance_in(
        self, conn: sa.Connection, device_id: str, seq: int, status: str, detail: str, now_ms: int
    ) -> bool:
        """Move a command to ``status`` if that is forward from where it is; True if it moved."""
        result = conn.execute(
            sa.update(commands)
            .where(
                commands.c.device_id == device_id,
                commands.c.seq == seq,
                commands.c.status.in_(statuses_before(status)),
            )
            .values(status=status, detail=detail, updated_ms=now_ms)
        )
        return result.rowcount == 1

    def create_command(
        self, device_id: str, name: str, args: dict[str, str], expires_ms: int, now_ms: int
    ) -> int:
        """Queue command ``name`` for a known device; return its number (the device's highest + 1).

        Numbering is safe against concurrent creation: SQLite takes the write lock at
        BEGIN, PostgreSQL locks the device's row before reading the highest number.
        """
        operation = f"creating command {name!r} for device {device_id!r}"
        with self._db.transaction(operation, immediate=True) as conn:
            device = sa.select(devices.c.device_id).where(devices.c.device_id == device_id)
            if conn.dialect.name == "postgresql":
                device = device.with_for_update()
            if conn.execute(device).first() is None:
                raise self._db.failure(operation, f"no device by the id of {device_id!r}")
            highest = conn.execute(
                sa.select(sa.func.max(commands.c.seq)).where(commands.c.device_id == device_id)
            ).scalar()
            seq = (highest or 0) + 1
            conn.execute(
                sa.insert(commands).values(
                    device_id=device_id,
                    seq=seq,
                    name=name,
                    args=dict(args),
                    created_ms=now_ms,
                    expires_ms=expires_ms,
                    status="queued",
                    detail="",
                    updated_ms=now_ms,
                )
            )
        return seq

    def commands_for(self, device_ids: Sequence[str], statuses: Sequence[str] = ("queued",)) -> list[dict[str, Any]]:
        """Commands of these devices in these statuses (e.g. to push to a gateway), by device and number."""
        ids = sorted(set(device_ids))
        out: list[dict[str, Any]] = []
        with self._db.transaction(f"commands of {len(ids)} devices", snapshot=True) as conn:
            for i in range(0, len(ids), IN_CHUNK):
                query = sa.select(commands).where(
                    commands.c.device_id.in_(ids[i : i + IN_CHUNK]), commands.c.status.in_(list(statuses))
                )
                rows = conn.execute(query.order_by(commands.c.device_id, commands.c.seq)).mappings()
                out += [dict(row) for row in rows]
        return out

    def commands_for_gateway(self, gateway_id: str, statuses: Sequence[str] = ("queued",)) -> list[dict[str, Any]]:
        """Commands in these statuses of every device the gateway serves now (``devices.gateway_id``)."""
        query = (
            sa.select(commands)
            .join(devices, devices.c.device_id == commands.c.device_id)
            .where(devices.c.gateway_id == gateway_id, commands.c.status.in_(list(statuses)))
            .order_by(commands.c.device_id, commands.c.seq)
        )
        with self._db.transaction(f"commands behind gateway {gateway_id!r}", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def mark_command(self, device_id: str, seq: int, status: str, detail: str, now_ms: int) -> bool:
        """Move a command to ``status``; False if it is unknown or already there or further on
        (a late "held" never undoes "delivered"; done, failed and expired are final)."""
        before = statuses_before(status)  # ValueError for a status that does not exist
        with self._db.transaction(f"marking command {seq} of device {device_id!r} {status}") as conn:
            return bool(before) and self.advance_in(conn, device_id, seq, status, detail, now_ms)

    def expire_commands(self, now_ms: int) -> list[tuple[str, int]]:
        """Mark queued commands whose TTL has passed ``expired``; return their (device_id, seq).

        Only ``queued`` ones: a command a gateway holds is expired by that gateway, which reports it.
        """
        with self._db.transaction("expiring commands") as conn:
            result = conn.execute(
                sa.update(commands)
                .where(commands.c.status == "queued", commands.c.expires_ms <= now_ms)
                .values(status="expired", detail="expired before a gateway held it", updated_ms=now_ms)
                .returning(commands.c.device_id, commands.c.seq)
            )
            return sorted((device_id, int(seq)) for device_id, seq in result)

    def list_commands(self, device_id: str) -> list[dict[str, Any]]:
        """Every command of a device, oldest first: device_id, seq, name, args, created_ms, expires_ms,
        status, detail, updated_ms."""
        query = sa.select(commands).where(commands.c.device_id == device_id).order_by(commands.c.seq)
        with self._db.transaction(f"listing commands of device {device_id!r}", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

"""The store's DDI credentials: one TargetToken per DDI device, kept as its SHA-256 only (migration 8).

The table is declared on ``schema.metadata`` here, beside the records that use them. A token is issued
for a device and a site (``issue``: a new one replaces the old, which stops working), revoked
(``revoke``: the row stays, marked), and the live ones of a site are what its gateway is sent
(``site_credentials``), under a version that grows with every change of that site's rows.

    ddi = DdiRecords(db)
    ddi.issue("ddi-1", "site-1", "ddi-board", token_sha256, now_ms)
    version, rows = ddi.site_credentials("site-1")       # rows: device_id, token_sha256, hw
    ddi.revoke("ddi-1", now_ms) -> the device's site, or None if it had no live token
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cloud.store.database import Database
from cloud.store.schema import metadata

__all__ = ["DdiRecords", "ddi_tokens"]

ddi_tokens = sa.Table(
    "ddi_tokens",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("site_id", sa.String(128), nullable=False),
    sa.Column("hw", sa.String(128), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("issued_ms", sa.BigInteger, nullable=False),
    sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    sa.Column("changed_ms", sa.BigInteger, nullable=False),
    sa.Index("ddi_tokens_site", "site_id"),
)


class DdiRecords:
    def __init__(self, db: Database) -> None:
        self._db = db

    def issue(self, device_id: str, site: str, hw: str, token_sha256: str, now_ms: int) -> None:
        with self._db.transaction(f"DDI token for {device_id!r}") as conn:
            last = conn.execute(sa.select(sa.func.max(ddi_tokens.c.changed_ms))).scalar() or 0
            changed = max(now_ms, last + 1)  # versions only grow, even if the clock steps back
            row = {"device_id": device_id, "site_id": site, "hw": hw, "token_sha256": token_sha256,
                   "issued_ms": now_ms, "revoked_ms": None, "changed_ms": changed}
            ins = self._db.insert(ddi_tokens).values(**row)
            conn.execute(ins.on_conflict_do_update(index_elements=[ddi_tokens.c.device_id],
                                                   set_={k: v for k, v in row.items() if k != "device_id"}))

    def revoke(self, device_id: str, now_ms: int) -> str | None:
        with self._db.transaction(f"revoke the DDI token of {device_id!r}") as conn:
            last = conn.execute(sa.select(sa.func.max(ddi_tokens.c.changed_ms))).scalar() or 0
            site = conn.execute(sa.select(ddi_tokens.c.site_id).where(
                ddi_tokens.c.device_id == device_id, ddi_tokens.c.revoked_ms.is_(None))).scalar()
            if site is None:
                return None
            conn.execute(sa.update(ddi_tokens).where(ddi_tokens.c.device_id == device_id)
                         .values(revoked_ms=now_ms, changed_ms=max(now_ms, last + 1)))
            return str(site)

    def site_credentials(self, site: str) -> tuple[int, list[dict[str, Any]]]:
        """(version, the live tokens of ``site``): the version is the newest change of the site's rows."""
        with self._db.transaction("reading DDI tokens") as conn:
            version = conn.execute(sa.select(sa.func.max(ddi_tokens.c.changed_ms))
                                   .where(ddi_tokens.c.site_id == site)).scalar() or 0
            rows = conn.execute(sa.select(ddi_tokens.c.device_id, ddi_tokens.c.token_sha256, ddi_tokens.c.hw)
                                .where(ddi_tokens.c.site_id == site, ddi_tokens.c.revoked_ms.is_(None))
                                .order_by(ddi_tokens.c.device_id)).mappings().all()
        return int(version), [dict(r) for r in rows]

    def sites(self) -> list[str]:
        with self._db.transaction("reading DDI tokens") as conn:
            return sorted(str(s) for s in conn.execute(sa.select(ddi_tokens.c.site_id).distinct()).scalars())

    def list_tokens(self, site: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(ddi_tokens.c.device_id, ddi_tokens.c.site_id, ddi_tokens.c.hw, ddi_tokens.c.issued_ms,
                      ddi_tokens.c.revoked_ms).order_by(ddi_tokens.c.device_id)
        if site is not None:
            q = q.where(ddi_tokens.c.site_id == site)
        with self._db.transaction("reading DDI tokens") as conn:
            return [dict(r) for r in conn.execute(q).mappings().all()]

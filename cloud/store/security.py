"""The store's identity and access records: operators, API tokens, claim tokens, preauthorized serials,
device identities (enrollment and certificates), revocation list versions, and the audit log.

The tables are declared on ``schema.metadata`` here, beside the records that use them; migration 5
creates them. ``cloud.security.service`` is handed these records.

    security.add_user("alice", "operator", ["site-1"], now_ms)
    security.save_api_token(record)                 # cloud.security.rbac.TokenRecord, hash only
    security.save_claim_token(record, now_ms); security.claim_token(token_id)
    security.preauthorize(serial, site, device_id, now_ms)
    security.enroll(...); security.identity(device_id)
    security.revocation_list() -> (version, revoked, quarantined); security.save_revocation_list(...)
    security.append_audit(who=..., action=..., ...) -> AuditRecord   # serialized, hash-chained
    security.audit_records(after=-1, limit=1000)

Appending to the audit log reads the head and inserts its successor in one
write transaction (SQLite's BEGIN IMMEDIATE, PostgreSQL's table lock), and the
primary key on ``seq`` makes a racing second insert fail: the chain never forks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.security.audit import AuditRecord, make_record
from cloud.security.enrollment import ClaimToken, DeviceBinding, Preauthorization
from cloud.security.rbac import Role, TokenRecord, User
from cloud.store.batch import BatchPlan, plan_batch
from cloud.store.database import Database
from cloud.store.schema import JSON_VALUES, devices, gateways, metadata
from common.protocol.messages import ForwardRecord

__all__ = [
    "site_checked_plans",
    "IDENTITY_STATUSES",
    "foreign_ids_in",
    "SecurityRecords",
    "api_tokens",
    "audit_log",
    "claim_tokens",
    "identities",
    "preauthorizations",
    "revocation_lists",
    "users",
]

IDENTITY_STATUSES = ("pending", "enrolled")

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("sites", JSON_VALUES, nullable=True),  # null: every site
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(128), sa.ForeignKey("users.user_id"), nullable=False),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("sites", JSON_VALUES, nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False),
)
claim_tokens = sa.Table(
    "claim_tokens",
    metadata,
    sa.Column("token_id", sa.String(32), primary_key=True),
    sa.Column("site", sa.String(128), nullable=False),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Column("max_uses", sa.Integer, nullable=False),
    sa.Column("uses", sa.Integer, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)
preauthorizations = sa.Table(
    "preauthorizations",
    metadata,
    sa.Column("serial", sa.String(128), primary_key=True),
    sa.Column("site", sa.String(128), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)
identities = sa.Table(
    "identities",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("site", sa.String(128), nullable=False),
    sa.Column("hw", sa.String(128), nullable=False),
    sa.Column("serial", sa.String(128), nullable=False),
    sa.Column("curve_key", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("gateway_id", sa.String(128), nullable=False),
    sa.Column("cert_serial", sa.String(64), nullable=True),
    sa.Column("not_after_ms", sa.BigInteger, nullable=True),
    sa.Column("groups", JSON_VALUES, nullable=False),
    sa.Column("reprovision", sa.Boolean, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint("status IN ('pending', 'enrolled')", name="identities_status"),
)
revocation_lists = sa.Table(
    "revocation_lists",
    metadata,
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("revoked", JSON_VALUES, nullable=False),
    sa.Column("quarantined", JSON_VALUES, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("who", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("when_ms", sa.BigInteger, nullable=False),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)


def _sites(value: Any) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _site_list(sites: Iterable[str] | None) -> list[str] | None:
    return None if sites is None else sorted(set(sites))


class SecurityRecords:
    """Operators, tokens, claims, device identities, revocation lists, the audit log."""

    def __init__(self, db: Database) -> None:
        self._db = db


    # -- operators and API tokens ----------------------------------------------------------

    def add_user(self, user_id: str, role: str, sites: Iterable[str] | None, now_ms: int) -> User:
        r = Role.parse(role)
        with self._db.transaction(f"adding user {user_id!r}") as conn:
            conn.execute(sa.delete(users).where(users.c.user_id == user_id))
            conn.execute(sa.insert(users).values(user_id=user_id, role=r.label, sites=_site_list(sites),
                                                 disabled=False, created_ms=now_ms))
        return User(user_id, r, _sites(_site_list(sites)))

    def user(self, user_id: str) -> User | None:
        with self._db.transaction(f"reading user {user_id!r}") as conn:
            row = conn.execute(sa.select(users).where(users.c.user_id == user_id)).mappings().first()
        if row is None:
            return None
        return User(row["user_id"], Role.parse(row["role"]), _sites(row["sites"]), bool(row["disabled"]))

    def save_api_token(self, rec: TokenRecord) -> None:
        with self._db.transaction(f"saving API token {rec.token_id}") as conn:
            conn.execute(sa.insert(api_tokens).values(
                token_id=rec.token_id, user_id=rec.user_id, secret_hash=rec.secret_hash, role=rec.role.label,
                sites=_site_list(rec.sites), created_ms=rec.created_ms, expires_ms=rec.expires_ms, revoked=rec.revoked))

    def api_token(self, token_id: str) -> TokenRecord | None:
        with self._db.transaction(f"reading API token {token_id}") as conn:
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.token_id == token_id)).mappings().first()
        if row is None:
            return None
        return TokenRecord(row["token_id"], row["user_id"], row["secret_hash"], Role.parse(row["role"]),
                           _sites(row["sites"]), row["created_ms"], row["expires_ms"], bool(row["revoked"]))

    def revoke_api_token(self, token_id: str) -> bool:
        with self._db.transaction(f"revoking API token {token_id}") as conn:
            return conn.execute(sa.update(api_tokens).where(api_tokens.c.token_id == token_id)
                                .values(revoked=True)).rowcount == 1

    def revoke_claim_token(self, token_id: str) -> str | None:
        """The token's site if it was found (and is now revoked), else None."""
        with self._db.transaction(f"revoking claim token {token_id}") as conn:
            site = conn.execute(sa.select(claim_tokens.c.site).where(claim_tokens.c.token_id == token_id)).scalar_one_or_none()
            if site is not None:
                conn.execute(sa.update(claim_tokens).where(claim_tokens.c.token_id == token_id).values(revoked=True))
            return site

    # -- claims ------------------------------------------------------------------------

    def save_claim_token(self, rec: ClaimToken, now_ms: int) -> None:
        with self._db.transaction(f"saving claim token {rec.token_id}") as conn:
            conn.execute(sa.insert(claim_tokens).values(
                token_id=rec.token_id, site=rec.site, secret_hash=rec.secret_hash, expires_ms=rec.expires_ms,
                max_uses=rec.max_uses, uses=rec.uses, revoked=rec.revoked, created_ms=now_ms))

    def claim_token(self, token_id: str) -> ClaimToken | None:
        with self._db.transaction(f"reading claim token {token_id}") as conn:
            row = conn.execute(sa.select(claim_tokens).where(claim_tokens.c.token_id == token_id)).mappings().first()
        if row is None:
            return None
        return ClaimToken(row["token_id"], row["site"], row["secret_hash"], row["expires_ms"], row["max_uses"],
                          row["uses"], bool(row["revoked"]))

    def preauthorize(self, serial: str, site: str, device_id: str | None, now_ms: int) -> None:
        with self._db.transaction(f"preauthorizing serial {serial!r}") as conn:
            conn.execute(sa.delete(preauthorizations).where(preauthorizations.c.serial == serial))
            conn.execute(sa.insert(preauthorizations).values(serial=serial, site=site, device_id=device_id,
                                                             created_ms=now_ms))

    def preauthorization(self, serial: str) -> Preauthorization | None:
        with self._db.transaction(f"reading preauthorization {serial!r}") as conn:
            row = conn.execute(sa.select(preauthorizations).where(preauthorizations.c.serial == serial)).mappings().first()
        return None if row is None else Preauthorization(row["serial"], row["site"], row["device_id"])

    # -- identities --------------------------------------------------------------------

    def identity(self, device_id: str) -> dict[str, Any] | None:
        with self._db.transaction(f"reading identity of {device_id!r}") as conn:
            row = conn.execute(sa.select(identities).where(identities.c.device_id == device_id)).mappings().first()
        return None if row is None else dict(row)

    def set_identity_status(self, device_id: str, status: str, expect: tuple[str, ...]) -> bool:
        """Set an identity's status if it is one of ``expect`` now; False (nothing written) otherwise."""
        with self._db.transaction(f"setting identity of {device_id!r} {status}") as conn:
            done = conn.execute(sa.update(identities).where(identities.c.device_id == device_id,
                                                            identities.c.status.in_(expect)).values(status=status))
        return done.rowcount == 1

    def binding(self, device_id: str) -> DeviceBinding | None:
        row = self.identity(device_id)
        if row is None or row["status"] != "enrolled":
            return None
        return DeviceBinding(row["device_id"], row["curve_key"].encode(), row["site"], bool(row["reprovision"]))

    def list_identities(self, site: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(identities).order_by(identities.c.device_id)
        if site is not None:
            query = query.where(identities.c.site == site)
        with self._db.transaction("listing identities", snapshot=True) as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def enroll(
        self, *, device_id: str, site: str, hw: str, serial: str, curve_key: str, status: str, gateway_id: str,
        cert_serial: str | None, not_after_ms: int | None, groups: Iterable[str], consume_token: str | None, now_ms: int,
    ) -> bool:
        """Record an enrollment decision; with ``consume_token``, one use of it in the same transaction.
        False (nothing written) if the token was used up meanwhile."""
        with self._db.transaction(f"enrolling {device_id!r}", immediate=True) as conn:
            if consume_token is not None:
                done = conn.execute(
                    sa.update(claim_tokens)
                    .where(claim_tokens.c.token_id == consume_token, claim_tokens.c.uses < claim_tokens.c.max_uses)
                    .values(uses=claim_tokens.c.uses + 1)
                )
                if done.rowcount != 1:
                    return False
            conn.execute(sa.delete(identities).where(identities.c.device_id == device_id))
            conn.execute(sa.insert(identities).values(
                device_id=device_id, site=site, hw=hw, serial=serial, curve_key=curve_key, status=status,
                gateway_id=gateway_id, cert_serial=cert_serial, not_after_ms=not_after_ms, groups=list(groups),
                reprovision=False, updated_ms=now_ms))
        return True

    def set_reprovision(self, device_id: str, allowed: bool, now_ms: int) -> bool:
        with self._db.transaction(f"re-provision flag of {device_id!r}") as conn:
            done = conn.execute(sa.update(identities).where(identities.c.device_id == device_id)
                                .values(reprovision=allowed, updated_ms=now_ms))
            return done.rowcount == 1

    # -- revocation --------------------------------------------------------------------

    def revocation_list(self) -> tuple[int, dict[str, str], dict[str, str]]:
        with self._db.transaction("reading the revocation list") as conn:
            row = conn.execute(sa.select(revocation_lists).order_by(revocation_lists.c.version.desc()).limit(1)).mappings().first()
        if row is None:
            return 0, {}, {}
        return row["version"], dict(row["revoked"]), dict(row["quarantined"])

    def save_revocation_list(self, version: int, revoked: dict[str, str], quarantined: dict[str, str], now_ms: int) -> None:
        """Versions only go up: a second writer of the same version fails on the primary key."""
        with self._db.transaction(f"saving revocation list {version}") as conn:
            conn.execute(sa.insert(revocation_lists).values(version=version, revoked=revoked, quarantined=quarantined,
                                                            created_ms=now_ms))

    # -- audit -------------------------------------------------------------------------

    def append_audit(self, *, who: str, action: str, target: str, when_ms: int, source: str, result: str | bool,
                     detail: str = "") -> AuditRecord:
        with self._db.transaction(f"appending audit record {action}", immediate=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
            row = conn.execute(sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).mappings().first()
            prev = None if row is None else AuditRecord(**dict(row))
            rec = make_record(prev, who=who[:256], action=action[:64], target=target[:256], when_ms=when_ms,
                              source=source[:128], result=result, detail=detail)
            conn.execute(sa.insert(audit_log).values(**{f: getattr(rec, f) for f in rec.__slots__}))
        return rec

    def audit_records(self, after: int = -1, limit: int = 1000) -> list[AuditRecord]:
        query = sa.select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(limit)
        with self._db.transaction("reading the audit log", snapshot=True) as conn:
            return [AuditRecord(**dict(r)) for r in conn.execute(query).mappings()]

    def audit_page(self, *, after: int = -1, limit: int = 1000, before: int | None = None, action: str | None = None,
                   who: str | None = None, newest_first: bool = False) -> list[AuditRecord]:
        """One page of the log, filtered and ordered in SQL: ``seq > after`` (and ``< before``), ``action`` a
        prefix, ``who`` exact; at most ``limit`` records, by seq (highest first with ``newest_first``)."""
        query = sa.select(audit_log).where(audit_log.c.seq > after)
        if before is not None:
            query = query.where(audit_log.c.seq < before)
        if action is not None:
            escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(audit_log.c.action.like(f"{escaped}%", escape="\\"))
        if who is not None:
            query = query.where(audit_log.c.who == who)
        order = audit_log.c.seq.desc() if newest_first else audit_log.c.seq
        with self._db.transaction("reading a page of the audit log", snapshot=True) as conn:
            return [AuditRecord(**dict(r)) for r in conn.execute(query.order_by(order).limit(limit)).mappings()]

    def audit_chain(self, batch: int = 5000) -> Iterator[AuditRecord]:
        """The whole log in order, read ``batch`` records at a time (for ``verify_chain``: memory stays bounded)."""
        after = -1
        while page := self.audit_records(after, batch):
            yield from page
            after = page[-1].seq

    def audit_count(self) -> int:
        with self._db.transaction("counting the audit log", snapshot=True) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar_one())

    def device_site(self, device_id: str) -> str | None:
        """The site a device belongs to: its identity's, else the site it was last seen at."""
        with self._db.transaction(f"site of device {device_id!r}") as conn:
            site = conn.execute(sa.select(identities.c.site).where(identities.c.device_id == device_id)).scalar_one_or_none()
            if site is None:
                site = conn.execute(sa.select(devices.c.site_id).where(devices.c.device_id == device_id)).scalar_one_or_none()
        return site

    def site_map(self) -> dict[str, str]:
        """Every device's and gateway's site (a device's identity's site wins over where it was last seen): what
        the operator API filters a scoped principal's lists by (``cloud.http.scope``)."""
        with self._db.transaction("site of every device and gateway", snapshot=True) as conn:
            found = {r.gateway_id: r.site_id for r in conn.execute(sa.select(gateways.c.gateway_id, gateways.c.site_id))}
            found.update({r.device_id: r.site_id for r in conn.execute(sa.select(devices.c.device_id, devices.c.site_id))})
            found.update({r.device_id: r.site for r in conn.execute(sa.select(identities.c.device_id, identities.c.site))})
        return found


def foreign_ids_in(conn: sa.Connection, ids: Iterable[str], site: str) -> dict[str, str]:
    """Of ``ids`` (the devices a gateway of ``site`` forwarded records for), those that belong to another site:
    id -> that site. A device's identity, its stored site, and a gateway's site all count; a gateway speaks only
    for its own site's devices (a device changes site only by an operator's action). An id found to be of ``site``
    is remembered for ``NOT_FOREIGN_TTL_S`` (so ingest costs no query per batch; a device an operator moved is
    refused at its old site within that time)."""
    known = _NOT_FOREIGN.setdefault((str(conn.engine.url), site), {})
    now = time.monotonic()
    wanted = sorted(i for i in set(ids) if known.get(i, 0.0) < now)
    if not wanted:
        return {}  # every id was checked within NOT_FOREIGN_TTL_S: the hot path costs no query
    found: dict[str, str] = {}
    for table, id_col, site_col in ((devices, devices.c.device_id, devices.c.site_id),
                                    (gateways, gateways.c.gateway_id, gateways.c.site_id),
                                    (identities, identities.c.device_id, identities.c.site)):
        for i in range(0, len(wanted), 500):
            rows = conn.execute(sa.select(id_col, site_col).where(id_col.in_(wanted[i:i + 500]), site_col != site))
            found.update({r[0]: r[1] for r in rows})
    if len(known) > 100_000:
        known.clear()
    known.update({i: now + NOT_FOREIGN_TTL_S for i in wanted if i not in found})
    return found


NOT_FOREIGN_TTL_S = 30.0  # an id found to be of a site is not looked up again for this long (per database, site)
_NOT_FOREIGN: dict[tuple[str, str], dict[str, float]] = {}


def site_checked_plans(conn: sa.Connection, batches: Sequence[tuple[str, str, Sequence[ForwardRecord]]],
                       now_ms: int) -> tuple[list[BatchPlan], list[list[str]]]:
    """Each forwarded batch's plan (``cloud.store.batch``) without the records of devices of another site than
    its gateway's (``foreign_ids_in``: a gateway speaks only for its own site), and those refusals per batch."""
    plans, refused = [], []
    for gateway_id, site, records in batches:
        foreign = foreign_ids_in(conn, {r.device_id for r in records}, site)
        if foreign:
            records = [r for r in records if r.device_id not in foreign]
        plans.append(plan_batch(records, now_ms))
        refused.append([f"records of {d!r} refused: it belongs to site {s!r}, not {site!r} of gateway {gateway_id!r}"
                        for d, s in sorted(foreign.items())])
    return plans, refused

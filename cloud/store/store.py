"""The cloud's state store: sites, gateways, devices and telemetry on SQLAlchemy Core.

    store = Store.open("sqlite:////var/lib/edgefleet/cloud.db")   # or postgresql+psycopg://...
    result = store.ingest("gw-1", "site-a", records, now_ms)        # one transaction
    store.list_devices(); store.list_sites(); store.telemetry_summary()
    store.close()

SQLite is the default: every connection is set to WAL journal mode,
``synchronous=FULL`` (a committed ingest survives a power cut) and enforced
foreign keys. The same Core statements run on PostgreSQL; the one dialect
difference, ``INSERT .. ON CONFLICT``, is built by the dialect's own ``insert``.

Thread safety: a ``Store`` may be called from several threads. Each call takes
its own pooled connection and runs in its own transaction; SQLite (WAL) lets
readers run beside the one writer, PostgreSQL serialises conflicting writers.
The cloud driver still keeps its writes on one thread, which keeps SQLite free
of writer contention.

Every database failure is raised as ``StoreError`` naming the operation, the
database (password hidden) and the driver's cause.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from cloud.store.migrations import migrate
from cloud.store.schema import devices, gateways, sites, telemetry
from common.errors import StoreError
from common.protocol.messages import ForwardRecord

__all__ = ["IngestResult", "Store"]

_BEGIN_OPTION = "edgefleet_sqlite_begin"  # execution option: the statement that opens a SQLite transaction


@dataclass(frozen=True, slots=True)
class IngestResult:
    """How many records of a batch were new, and how many the store already held (or repeated)."""

    stored: int
    duplicates: int


class Store:
    """The cloud store. Build it with ``Store.open(url)``; the constructor does no I/O."""

    def __init__(self, engine: sa.Engine, *, applied: Sequence[int] = ()) -> None:
        self._engine = engine
        self._where = engine.url.render_as_string(hide_password=True)
        self._applied = tuple(applied)
        self._closed = False
        dialect = engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            raise StoreError(f"store at {self._where}: unsupported database {dialect!r} (use sqlite or postgresql)")
        self._insert = insert

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``), migrate, return the store."""
        engine = _create_engine(url)
        where = engine.url.render_as_string(hide_password=True)
        try:
            with engine.connect() as conn:
                if engine.dialect.name == "sqlite":
                    # take the write lock up front: two processes opening one file migrate one at a time
                    conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                with conn.begin():
                    applied = migrate(conn)
            return cls(engine, applied=applied)
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise StoreError(f"store open failed on {where}: {_cause(exc)}") from exc
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        """Release every pooled connection. Idempotent; later calls raise ``StoreError``."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for diagnostics and tests; callers use the methods)."""
        return self._engine

    @property
    def applied_migrations(self) -> tuple[int, ...]:
        """Migration versions this ``open`` applied; empty when the store was already current."""
        return self._applied

    # -- writes --------------------------------------------------------------------------

    def ingest(self, gateway_id: str, site: str, records: Sequence[ForwardRecord], now_ms: int) -> IngestResult:
        """Store a forwarded batch in ONE transaction; each (device_id, seq) is kept once.

        Upserts the site, the gateway and every device seen (``last_seq`` only grows),
        then inserts telemetry with ``ON CONFLICT DO NOTHING``. ``duplicates`` counts
        records already stored and repeats within this batch (the first one wins).
        """
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        last_seq: dict[str, int] = {}
        for r in records:
            key = (r.device_id, r.seq)
            if key not in rows:
                rows[key] = {
                    "device_id": r.device_id,
                    "seq": r.seq,
                    "ts_ms": r.ts_ms,
                    "stream": r.stream,
                    "values": dict(r.values),
                    "received_ms": now_ms,
                }
            if r.device_id not in last_seq or r.seq > last_seq[r.device_id]:
                last_seq[r.device_id] = r.seq
        with self._transaction(f"ingest of {len(records)} records from gateway {gateway_id!r}") as conn:
            self._upsert_site(conn, site, now_ms)
            self._upsert_gateway(conn, gateway_id, site, now_ms, None)
            if last_seq:
                ins = self._insert(devices)
                conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=[devices.c.device_id],
                        set_={
                            "site_id": ins.excluded.site_id,
                            "gateway_id": ins.excluded.gateway_id,
                            "last_seen_ms": _greatest(devices.c.last_seen_ms, ins.excluded.last_seen_ms),
                            "last_seq": _greatest(devices.c.last_seq, ins.excluded.last_seq),
                        },
                    ),
                    [
                        {
                            "device_id": device_id,
                            "site_id": site,
                            "gateway_id": gateway_id,
                            "first_seen_ms": now_ms,
                            "last_seen_ms": now_ms,
                            "last_seq": seq,
                        }
                        # sorted: concurrent writers on PostgreSQL take row locks in one order (no deadlock)
                        for device_id, seq in sorted(last_seq.items())
                    ],
                )
            stored = 0
            if rows:
                # executemany; RETURNING yields only the rows actually inserted, on both dialects
                new = conn.execute(
                    self._insert(telemetry)
                    .on_conflict_do_nothing(index_elements=[telemetry.c.device_id, telemetry.c.seq])
                    .returning(telemetry.c.seq),
                    [rows[key] for key in sorted(rows)],
                )
                stored = len(new.all())
        return IngestResult(stored=stored, duplicates=len(records) - stored)

    def touch_gateway(self, gateway_id: str, site: str, now_ms: int, public_key: str | None = None) -> None:
        """Record that a gateway was seen (e.g. at Hello); a ``None`` key keeps the stored one."""
        with self._transaction(f"touch of gateway {gateway_id!r}") as conn:
            self._upsert_site(conn, site, now_ms)
            self._upsert_gateway(conn, gateway_id, site, now_ms, public_key)

    def _upsert_site(self, conn: sa.Connection, site: str, now_ms: int) -> None:
        ins = self._insert(sites).values(site_id=site, first_seen_ms=now_ms, last_seen_ms=now_ms)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[sites.c.site_id],
                set_={"last_seen_ms": _greatest(sites.c.last_seen_ms, ins.excluded.last_seen_ms)},
            )
        )

    def _upsert_gateway(
        self, conn: sa.Connection, gateway_id: str, site: str, now_ms: int, public_key: str | None
    ) -> None:
        ins = self._insert(gateways).values(
            gateway_id=gateway_id, site_id=site, public_key=public_key, first_seen_ms=now_ms, last_seen_ms=now_ms
        )
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[gateways.c.gateway_id],
                set_={
                    "site_id": ins.excluded.site_id,
                    "public_key": sa.func.coalesce(ins.excluded.public_key, gateways.c.public_key),
                    "last_seen_ms": _greatest(gateways.c.last_seen_ms, ins.excluded.last_seen_ms),
                },
            )
        )

    # -- reads ---------------------------------------------------------------------------

    def list_devices(self) -> list[dict[str, Any]]:
        """Every device: device_id, site_id, gateway_id, first_seen_ms, last_seen_ms, last_seq."""
        with self._transaction("listing devices", snapshot=True) as conn:
            result = conn.execute(sa.select(devices).order_by(devices.c.device_id))
            return [dict(row) for row in result.mappings()]

    def list_sites(self) -> list[dict[str, Any]]:
        """Every site: site_id, first_seen_ms, last_seen_ms, gateway_count, device_count."""
        gateway_count = (
            sa.select(sa.func.count()).select_from(gateways).where(gateways.c.site_id == sites.c.site_id)
        ).scalar_subquery()
        device_count = (
            sa.select(sa.func.count()).select_from(devices).where(devices.c.site_id == sites.c.site_id)
        ).scalar_subquery()
        query = sa.select(
            sites, gateway_count.label("gateway_count"), device_count.label("device_count")
        ).order_by(sites.c.site_id)
        with self._transaction("listing sites", snapshot=True) as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def telemetry_summary(self) -> dict[str, Any]:
        """Totals ``rows``, ``distinct`` (device_id, seq) and ``duplicates_stored``, and ``devices``.

        ``devices`` lists device_id, count, min_seq and max_seq per device. The
        primary key keeps ``duplicates_stored`` at 0; it is reported so that an
        end-to-end test can prove it rather than assume it.
        """
        pairs = sa.select(telemetry.c.device_id, telemetry.c.seq).distinct().subquery()
        per_device = (
            sa.select(
                telemetry.c.device_id,
                sa.func.count().label("count"),
                sa.func.min(telemetry.c.seq).label("min_seq"),
                sa.func.max(telemetry.c.seq).label("max_seq"),
            )
            .group_by(telemetry.c.device_id)
            .order_by(telemetry.c.device_id)
        )
        with self._transaction("telemetry summary", snapshot=True) as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(telemetry)).scalar_one()
            distinct = conn.execute(sa.select(sa.func.count()).select_from(pairs)).scalar_one()
            per = [dict(row) for row in conn.execute(per_device).mappings()]
        return {"rows": rows, "distinct": distinct, "duplicates_stored": rows - distinct, "devices": per}

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, operation: str, *, snapshot: bool = False) -> Iterator[sa.Connection]:
        """One transaction on a pooled connection; commit on success, roll back and translate on failure.

        ``snapshot`` makes every statement see one snapshot (PostgreSQL REPEATABLE READ;
        a SQLite transaction already reads one snapshot in WAL mode).
        """
        if self._closed:
            raise StoreError(f"store {operation} failed on {self._where}: the store is closed")
        try:
            with self._engine.connect() as conn:
                if snapshot and self._engine.dialect.name == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store {operation} failed on {self._where}: {_cause(exc)}") from exc


def _greatest(a: Any, b: Any) -> sa.ColumnElement[Any]:
    """Portable GREATEST(a, b) (SQLite spells it max(a, b)); neither side is ever NULL here."""
    return sa.case((b > a, b), else_=a)


def _cause(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own message, one line, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None)
    cause = orig if orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # transactions are opened by _sqlite_on_begin: pysqlite's own implicit BEGIN
    # skips DDL and reads, which would make migrations and snapshots non-atomic
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def _create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"store URL {_hide_password(url)!r}: unsupported database {backend!r}"
                " (use sqlite:///path or postgresql+psycopg://...)"
            )
        if backend == "sqlite":
            engine = sa.create_engine(parsed)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        # pre-ping: a connection the server dropped while idle is replaced, not handed out
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"store URL {_hide_password(url)!r} cannot be used: {exc}") from exc


def _hide_password(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"

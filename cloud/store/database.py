"""The cloud's database: the engine, its migrations applied at open, and transactions (SQLAlchemy Core).

    db = Database.open("sqlite:////var/lib/edgefleet/cloud.db")   # or postgresql+psycopg://...
    with db.transaction("listing devices", snapshot=True) as conn:
        conn.execute(...)
    db.insert(table)          # the dialect's INSERT (with ON CONFLICT), the same on SQLite and PostgreSQL
    db.close()

Every repository (``cloud.store.telemetry``, ``commands``, ``alerts``, ``releases``, ``rollouts``,
``fleet``, ``metrics``, ``security``) runs its statements through one ``Database``.

SQLite is the default: every connection is set to WAL journal mode,
``synchronous=FULL`` (a committed ingest survives a power cut), enforced
foreign keys, a 32 MiB page cache and temporary tables in memory. The same Core statements run on PostgreSQL; ``INSERT .. ON
CONFLICT`` is built by the dialect's own ``insert``; a transaction that reads
before it writes takes SQLite's write lock at BEGIN (``immediate``) or a
PostgreSQL row or table lock.

Thread safety: a ``Database`` may be used from several threads. Each transaction
takes its own pooled connection; SQLite (WAL) lets readers run beside the one
writer, PostgreSQL serialises conflicting writers. The cloud driver still keeps
its writes on one thread, which keeps SQLite free of writer contention.

Every database failure is raised as ``StoreError`` naming the operation, the
database (password hidden) and the driver's cause.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from cloud.store.migrations import migrate
from common.errors import StoreError

__all__ = ["IN_CHUNK", "Database", "greatest"]

_BEGIN_OPTION = "edgefleet_sqlite_begin"  # execution option: the statement that opens a SQLite transaction
IN_CHUNK = 500  # ids per IN (...) list: well under every driver's parameter limit


class Database:
    """One database. Build it with ``Database.open(url)``; the constructor does no I/O."""

    def __init__(self, engine: sa.Engine, *, applied: Sequence[int] = ()) -> None:
        self._engine = engine
        self.where = engine.url.render_as_string(hide_password=True)
        self._applied = tuple(applied)
        self._closed = False
        self._fence = threading.local()  # .check: run first in every transaction of this thread (``fenced``)
        dialect = engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            raise StoreError(f"store at {self.where}: unsupported database {dialect!r} (use sqlite or postgresql)")
        self.insert = insert

    @classmethod
    def open(cls, url: str) -> Database:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql://...``, which means ``postgresql+psycopg://``),
        migrate, return the database."""
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
        """Release every pooled connection. Idempotent; later transactions raise ``StoreError``."""
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for diagnostics and tests; callers use the repositories)."""
        return self._engine

    @property
    def applied_migrations(self) -> tuple[int, ...]:
        """Migration versions this ``open`` applied; empty when the database was already current."""
        return self._applied

    def failure(self, operation: str, cause: str) -> StoreError:
        """The ``StoreError`` for ``operation`` refused for ``cause`` (e.g. an unknown device)."""
        return StoreError(f"store {operation} failed on {self.where}: {cause}")

    @contextmanager
    def transaction(self, operation: str, *, snapshot: bool = False, immediate: bool = False) -> Iterator[sa.Connection]:
        """One transaction on a pooled connection; commit on success, roll back and translate on failure.

        ``snapshot`` makes every statement see one snapshot (PostgreSQL REPEATABLE READ;
        a SQLite transaction already reads one snapshot in WAL mode). ``immediate`` takes
        SQLite's write lock at BEGIN, for a transaction that reads before it writes.
        """
        if self._closed:
            raise self.failure(operation, "the store is closed")
        try:
            with self._engine.connect() as conn:
                if snapshot and self._engine.dialect.name == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                if immediate and self._engine.dialect.name == "sqlite":
                    conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
                with conn.begin():
                    depth = getattr(self._fence, "depth", 0)
                    check = getattr(self._fence, "check", None)
                    if check is not None and depth == 0:  # a nested transaction is covered by the outer one's check
                        check(conn)
                    self._fence.depth = depth + 1
                    try:
                        yield conn
                    finally:
                        self._fence.depth = depth
        except sa.exc.SQLAlchemyError as exc:
            raise self.failure(operation, _cause(exc)) from exc

    @contextmanager
    def fenced(self, check: Callable[[sa.Connection], None]) -> Iterator[None]:
        """Every transaction this thread opens meanwhile runs ``check(conn)`` first, inside it: a leader-only
        call's fence (``cloud.coordination``), which raises ``FencedOff`` and so rolls the transaction back.
        A transaction opened inside another (on this thread) is not checked again: the outer one's check
        holds the lease row (``FOR SHARE``) until it ends, and asking again from a second connection would
        queue behind a takeover that waits for the outer one: a deadlock the database cannot see."""
        previous = getattr(self._fence, "check", None)
        self._fence.check = check
        try:
            yield
        finally:
            self._fence.check = previous


def greatest(a: Any, b: Any) -> sa.ColumnElement[Any]:
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
        # 32 MiB of page cache (the default is 2 MiB): the telemetry key's inner pages stay in memory as the
        # table grows; the metrics follower's temporary tables live in memory
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.execute("PRAGMA temp_store=MEMORY")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def _create_engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
        if parsed.drivername == "postgresql":  # psycopg 3 is the driver the cloud installs (and the bulk path uses)
            parsed = parsed.set(drivername="postgresql+psycopg")
        backend = parsed.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise StoreError(
                f"store URL {_hide_password(url)!r}: unsupported database {backend!r}"
                " (use sqlite:///path or postgresql://...)"
            )
        if backend == "sqlite":
            _private_file(parsed.database)
            engine = sa.create_engine(parsed)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        # pre-ping: a connection the server dropped while idle is replaced, not handed out
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"store URL {_hide_password(url)!r} cannot be used: {exc}") from exc


def _private_file(path: str | None) -> None:
    """The database file, made (or narrowed to) 0600 before SQLite opens it: its WAL and shared-memory files
    take the main file's permissions, so none of them is readable by other users."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            return  # no such directory: SQLite's own open fails and says so
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm", "-journal"):
            if os.path.exists(path + suffix):
                os.chmod(path + suffix, 0o600)
    except OSError as exc:
        raise StoreError(f"store file {path!r} cannot be made private (0600): {exc.strerror or exc}") from exc


def _hide_password(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"

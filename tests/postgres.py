"""The tests' PostgreSQL: the service on 127.0.0.1:5432 (trust auth), a fresh schema or database per use.

    with fresh_schema() as url: ...        # postgresql+psycopg://...?options=-csearch_path%3Def_test_<hex>
    with fresh_database() as url: ...      # postgresql+psycopg://.../edgefleet_ha_<hex>

Both are dropped afterwards. An unreachable server skips the test, or fails it where the PostgreSQL leg must run
(CI sets EDGEFLEET_REQUIRE_POSTGRES=1 in .ci/run): ``pg_unreachable``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

__all__ = ["PG_SERVER", "fresh_database", "fresh_schema", "pg_unreachable"]

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def pg_unreachable(why: str) -> None:
    """Skip a PostgreSQL leg, or fail it where it must run (CI sets EDGEFLEET_REQUIRE_POSTGRES=1: .ci/run)."""
    if os.environ.get("EDGEFLEET_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{why} (EDGEFLEET_REQUIRE_POSTGRES=1: the PostgreSQL leg must run)")
    pytest.skip(why)


@contextmanager
def _admin() -> Iterator[sa.Engine]:
    """An autocommit engine on the server's ``test`` database, checked reachable."""
    admin = sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.OperationalError as exc:
            pg_unreachable(f"PostgreSQL at {PG_SERVER} is unreachable: {exc.orig}")
        yield admin
    finally:
        admin.dispose()


@contextmanager
def _made(admin: sa.Engine, create: str, drop: str) -> Iterator[None]:
    with admin.connect() as conn:
        conn.exec_driver_sql(create)
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(drop)


@contextmanager
def fresh_schema() -> Iterator[str]:
    """The URL of an empty schema in the ``test`` database (its search_path), dropped afterwards."""
    name = f"ef_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin, _made(admin, f"CREATE SCHEMA {name}", f"DROP SCHEMA {name} CASCADE"):
        yield f"{PG_SERVER}/test?options=-csearch_path%3D{name}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of an empty database of its own (``edgefleet_ha_<hex>``), dropped afterwards (even if in use)."""
    name = f"edgefleet_ha_{uuid.uuid4().hex[:10]}"
    with _admin() as admin, _made(admin, f"CREATE DATABASE {name}", f"DROP DATABASE {name} WITH (FORCE)"):
        yield f"{PG_SERVER}/{name}"

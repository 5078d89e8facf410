"""A PostgreSQL database of this test session's own (``edgefleet_ha_<random>``), dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of an empty database made for this session (skipped if the server is unreachable)."""
    admin = sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_SERVER} is unreachable: {exc.orig}")
    name = f"edgefleet_ha_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """The session's database, emptied of coordination state before each test."""
    engine = sa.create_engine(pg_database)
    try:
        from cloud.store import Store

        Store.open(pg_database).close()  # migrated
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM coordinator_leases")
            conn.exec_driver_sql("DELETE FROM gateway_sessions")
        yield pg_database
    finally:
        engine.dispose()

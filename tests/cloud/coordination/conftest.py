"""A PostgreSQL database of this test session's own (``edgefleet_ha_<random>``), dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.postgres import fresh_database


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of an empty database made for this session."""
    with fresh_database() as url:
        yield url


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

"""The cloud store's tables as they are now (the newest migration's shape).

Queries use these ``Table`` objects; they never create anything. Tables are
created and changed only by ``cloud.store.migrations``, whose steps keep their
own frozen copy of each shape, so a later change here cannot rewrite history.

Only portable Core types are used: the same definitions run on SQLite and
PostgreSQL. Times are integer milliseconds since the epoch (``*_ms``), given
by the caller (the store never reads a clock).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = ["JSON_VALUES", "devices", "gateways", "metadata", "schema_version", "sites", "telemetry"]

metadata = sa.MetaData()

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite
JSON_VALUES = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
)

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("site_id", sa.String(128), primary_key=True),
    sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
)

gateways = sa.Table(
    "gateways",
    metadata,
    sa.Column("gateway_id", sa.String(128), primary_key=True),
    sa.Column("site_id", sa.String(128), sa.ForeignKey("sites.site_id"), nullable=False, index=True),
    sa.Column("public_key", sa.Text, nullable=True),
    sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("site_id", sa.String(128), sa.ForeignKey("sites.site_id"), nullable=False, index=True),
    sa.Column("gateway_id", sa.String(128), sa.ForeignKey("gateways.gateway_id"), nullable=False, index=True),
    sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)

# the primary key (device_id, seq) is what makes ingest at-most-once per record
telemetry = sa.Table(
    "telemetry",
    metadata,
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("stream", sa.String(128), nullable=False),
    # ``values`` is also a ColumnCollection method: reach it as telemetry.c["values"]
    sa.Column("values", JSON_VALUES, nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
)

"""Schema migrations: an ordered list, applied at open, recorded in ``schema_version``.

``migrate(conn)`` runs inside the caller's transaction: it creates
``schema_version`` if missing, reads the newest version applied, and applies
every later migration in order, inserting one ``schema_version`` row each.
Both SQLite and PostgreSQL run DDL transactionally, so a failed migration
leaves the database at the version it had. Opening an up-to-date store applies
nothing; a store newer than this code is refused rather than guessed at.

Each step keeps its own frozen table shapes (never ``schema.metadata``): the
current shape lives in ``schema.py`` and may move on; a step, once released,
never changes. To change the schema, append a ``Migration`` and update
``schema.py`` to match.

Why one module of ~610 lines: it is the database's history, one frozen step after
another, read top to bottom like a changelog; the runner at the end is a few lines.
Spreading the steps over modules would only hide their order.
"""
# one-piece: the database's history, one frozen step after another, read top to bottom (see the docstring)

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cloud.store.schema import schema_version
from common.errors import StoreError

__all__ = ["MIGRATIONS", "Migration", "migrate"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``apply`` runs DDL/DML on a connection inside a transaction."""

    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _v1_initial(conn: sa.Connection) -> None:
    md = sa.MetaData()
    json_values = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    sa.Table(
        "sites",
        md,
        sa.Column("site_id", sa.String(128), primary_key=True),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "gateways",
        md,
        sa.Column("gateway_id", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(128), sa.ForeignKey("sites.site_id"), nullable=False, index=True),
        sa.Column("public_key", sa.Text, nullable=True),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "devices",
        md,
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(128), sa.ForeignKey("sites.site_id"), nullable=False, index=True),
        sa.Column("gateway_id", sa.String(128), sa.ForeignKey("gateways.gateway_id"), nullable=False, index=True),
        sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "telemetry",
        md,
        sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("values", json_values, nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
    )
    md.create_all(conn)


def _v2_streams_gaps_status_commands(conn: sa.Connection) -> None:
    """Telemetry keyed by (device_id, stream, seq), gap reports, gateway status, downlink commands.

    The old ``telemetry.stream`` held what a record is ("env", "power"...): it
    becomes ``kind``, and every existing row joins the ``bulk`` stream. SQLite
    cannot change a primary key in place, so there the table is rebuilt (create
    the new shape, copy, drop, rename); PostgreSQL alters it in place.
    """
    md = sa.MetaData()
    json_values = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    # stand-ins so the foreign keys below resolve inside this step's own metadata
    sa.Table("devices", md, sa.Column("device_id", sa.String(128), primary_key=True))
    gateways = sa.Table("gateways", md, sa.Column("gateway_id", sa.String(128), primary_key=True))

    if conn.dialect.name == "sqlite":
        old = sa.Table(
            "telemetry",
            md,
            sa.Column("device_id", sa.String(128), primary_key=True),
            sa.Column("seq", sa.BigInteger, primary_key=True),
            sa.Column("ts_ms", sa.BigInteger),
            sa.Column("stream", sa.String(128)),
            sa.Column("values", json_values),
            sa.Column("received_ms", sa.BigInteger),
        )
        new = sa.Table(
            "telemetry_v2",
            md,
            sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
            sa.Column("stream", sa.String(16), primary_key=True),
            sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("ts_ms", sa.BigInteger, nullable=False),
            sa.Column("kind", sa.String(128), nullable=False),
            sa.Column("values", json_values, nullable=False),
            sa.Column("received_ms", sa.BigInteger, nullable=False),
        )
        new.create(conn)
        conn.execute(
            sa.insert(new).from_select(
                ["device_id", "stream", "seq", "ts_ms", "kind", "values", "received_ms"],
                sa.select(
                    old.c.device_id,
                    sa.literal("bulk", sa.String(16)),
                    old.c.seq,
                    old.c.ts_ms,
                    old.c.stream,
                    old.c["values"],
                    old.c.received_ms,
                ),
            )
        )
        conn.exec_driver_sql("DROP TABLE telemetry")
        conn.exec_driver_sql("ALTER TABLE telemetry_v2 RENAME TO telemetry")
    else:
        pkey = sa.inspect(conn).get_pk_constraint("telemetry")["name"]
        for ddl in (
            "ALTER TABLE telemetry RENAME COLUMN stream TO kind",
            "ALTER TABLE telemetry ADD COLUMN stream VARCHAR(16) NOT NULL DEFAULT 'bulk'",
            "ALTER TABLE telemetry ALTER COLUMN stream DROP DEFAULT",
            f'ALTER TABLE telemetry DROP CONSTRAINT "{pkey}"',
            "ALTER TABLE telemetry ADD CONSTRAINT telemetry_pkey PRIMARY KEY (device_id, stream, seq)",
        ):
            conn.exec_driver_sql(ddl)

    for column in (sa.Column("status", json_values, nullable=True), sa.Column("status_ts_ms", sa.BigInteger)):
        gateways.append_column(column)
        column_ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE gateways ADD COLUMN {column_ddl}")

    sa.Table(
        "gaps",
        md,
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("reporter", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.UniqueConstraint(
            "device_id", "stream", "first_seq", "last_seq", "reason", "reporter", name="gaps_report_key"
        ),
    ).create(conn)
    sa.Table(
        "commands",
        md,
        sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("args", json_values, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'held', 'delivered', 'done', 'failed', 'expired')", name="commands_status"
        ),
    ).create(conn)


def _v3_alerts_and_silences(conn: sa.Connection) -> None:
    """Alerts (one row per alert, open or resolved, with who acknowledged it) and silences."""
    md = sa.MetaData()
    json_values = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    sa.Table(
        "alerts",
        md,
        sa.Column("id", sa.String(400), primary_key=True),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_ms", sa.BigInteger, nullable=False),
        sa.Column("resolved_ms", sa.BigInteger, nullable=True),
        sa.Column("acked_by", sa.String(128), nullable=True),
        sa.Column("acked_ms", sa.BigInteger, nullable=True),
        sa.Column("last_event", sa.String(16), nullable=False),
        sa.Column("last_event_ms", sa.BigInteger, nullable=False),
        sa.Column("detail", json_values, nullable=False),
        sa.CheckConstraint("state IN ('open', 'resolved')", name="alerts_state"),
        sa.Index("alerts_state_opened", "state", "opened_ms"),
        sa.Index("alerts_subject", "subject"),
    ).create(conn)
    sa.Table(
        "silences",
        md,
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("until_ms", sa.BigInteger, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Index("silences_until", "until_ms"),
    ).create(conn)


def _v4_releases_and_deltas(conn: sa.Connection) -> None:
    """Firmware releases (unsigned until a trusted key signs the manifest the cloud built) and their deltas."""
    md = sa.MetaData()
    json_values = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    sa.Table(
        "releases",
        md,
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("hw", json_values, nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("manifest_body", sa.Text, nullable=False),
        sa.Column("signed_manifest", sa.Text, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("published_ms", sa.BigInteger, nullable=True),
        sa.Column("security_version", sa.BigInteger, nullable=False),
        sa.CheckConstraint("state IN ('unsigned', 'published')", name="releases_state"),
    )
    sa.Table(
        "deltas",
        md,
        sa.Column("release_version", sa.String(64), sa.ForeignKey("releases.version"), primary_key=True),
        sa.Column("from_version", sa.String(64), primary_key=True),
        sa.Column("method", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", json_values, nullable=False),
        sa.CheckConstraint("status IN ('offered', 'not-worth-it', 'failed')", name="deltas_status"),
    )
    md.create_all(conn)


def _v5_identity_access_audit(conn: sa.Connection) -> None:
    md = sa.MetaData()
    json_values = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    sa.Table(
        "users",
        md,
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("sites", json_values, nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "api_tokens",
        md,
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(128), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("secret_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("sites", json_values, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=True),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    sa.Table(
        "claim_tokens",
        md,
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(200), nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "preauthorizations",
        md,
        sa.Column("serial", sa.String(128), primary_key=True),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "identities",
        md,
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("site", sa.String(128), nullable=False),
        sa.Column("hw", sa.String(128), nullable=False),
        sa.Column("serial", sa.String(128), nullable=False),
        sa.Column("curve_key", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("gateway_id", sa.String(128), nullable=False),
        sa.Column("cert_serial", sa.String(64), nullable=True),
        sa.Column("not_after_ms", sa.BigInteger, nullable=True),
        sa.Column("groups", json_values, nullable=False),
        sa.Column("reprovision", sa.Boolean, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'enrolled')", name="identities_status"),
    )
    sa.Table(
        "revocation_lists",
        md,
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("revoked", json_values, nullable=False),
        sa.Column("quarantined", json_values, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "audit_log",
        md,
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
    md.create_all(conn)


def _v6_rollouts(conn: sa.Connection) -> None:
    """Rollouts (cloud.rollouts): the plan and the engine's header, and one row per targeted device."""
    md = sa.MetaData()
    json_values = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    sa.Table(
        "rollouts",
        md,
        sa.Column("rollout_id", sa.String(64), primary_key=True),
        sa.Column("release_version", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("plan", json_values, nullable=False),
        sa.Column("header", json_values, nullable=False),
        sa.Column("install_args", json_values, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint(
            "state IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'aborted')", name="rollouts_state"
        ),
    )
    sa.Table(
        "rollout_devices",
        md,
        sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.rollout_id"), primary_key=True),
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(128), nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("record", json_values, nullable=False),
        sa.Index("rollout_devices_device", "device_id"),
    )
    md.create_all(conn)


def _v7_fleet(conn: sa.Connection) -> None:
    """Knowing the fleet: device lifecycle state and its history, inventory, tags, static and dynamic groups,
    layered config with each device's desired and applied version, raw metrics and their rollups."""
    conn.execute(sa.text("ALTER TABLE devices ADD COLUMN state VARCHAR(16) DEFAULT 'active' NOT NULL"))
    md = sa.MetaData()
    json_values = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    row_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    sa.Table("devices", md, sa.Column("device_id", sa.String(128), primary_key=True))  # for the foreign keys
    sa.Table(
        "inventory",
        md,
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("attrs", json_values, nullable=False),
        sa.Column("reported_ms", sa.BigInteger, nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "device_tags",
        md,
        sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("tag", sa.String(128), primary_key=True),
        sa.Index("device_tags_tag", "tag"),
    )
    sa.Table(
        "groups",
        md,
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("query", sa.Text, nullable=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint("kind IN ('static', 'dynamic')", name="groups_kind"),
    )
    sa.Table(
        "group_members",
        md,
        sa.Column("group_name", sa.String(128), sa.ForeignKey("groups.name"), primary_key=True),
        sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Index("group_members_device", "device_id"),
    )
    sa.Table(
        "lifecycle_history",
        md,
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), nullable=False, index=True),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("by", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "config_layers",
        md,
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("values", json_values, nullable=False),
        sa.Column("locked", json_values, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.CheckConstraint("kind IN ('global', 'site', 'group', 'device')", name="config_layers_kind"),
    )
    sa.Table(
        "device_config",
        md,
        sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("desired_version", sa.String(64), nullable=False),
        sa.Column("desired", json_values, nullable=False),
        sa.Column("desired_ms", sa.BigInteger, nullable=False),
        sa.Column("applied_version", sa.String(64), nullable=True),
        sa.Column("applied_ms", sa.BigInteger, nullable=True),
    )
    sa.Table(
        "metric_points",
        md,
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("metric", sa.String(128), primary_key=True),
        sa.Column("ts_ms", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Index("metric_points_ts", "ts_ms"),
    )
    sa.Table(
        "metric_rollups",
        md,
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("metric", sa.String(128), primary_key=True),
        sa.Column("width_ms", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("min", sa.Float, nullable=False),
        sa.Column("max", sa.Float, nullable=False),
        sa.Column("sum", sa.Float, nullable=False),
        sa.Index("metric_rollups_start", "width_ms", "start_ms"),
    )
    for name, table in md.tables.items():
        if name != "devices":
            table.create(conn)


def _v8_ddi_tokens(conn: sa.Connection) -> None:
    """DDI devices' TargetTokens (SHA-256 only), per device and site, revocable (gateway/ddi, docs/DDI.md)."""
    md = sa.MetaData()
    sa.Table(
        "ddi_tokens",
        md,
        sa.Column("device_id", sa.String(128), primary_key=True),
        sa.Column("site_id", sa.String(128), nullable=False),
        sa.Column("hw", sa.String(128), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("issued_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
        sa.Column("changed_ms", sa.BigInteger, nullable=False),
        sa.Index("ddi_tokens_site", "site_id"),
    )
    md.create_all(conn)


def _v9_metric_follower(conn: sa.Connection) -> None:
    """Metric points and rollups leave the ingest transaction: telemetry rows carry the id of the ingest that
    stored them, and each such ingest leaves a ``metric_backlog`` entry the metrics follower folds and deletes."""
    md = sa.MetaData()
    sa.Table(
        "metric_backlog",
        md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("ranges", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    md.create_all(conn)
    conn.exec_driver_sql("ALTER TABLE telemetry ADD COLUMN ingest_id BIGINT")
    if conn.dialect.name == "postgresql":
        # ingest upserts every device in the transaction that stores its telemetry (what the key promised);
        # the per-row RI trigger cost a third of the bulk path's time. SQLite keeps it (dropping it means a
        # table rebuild there, and its check is an in-process index lookup)
        conn.exec_driver_sql("ALTER TABLE telemetry DROP CONSTRAINT IF EXISTS telemetry_device_id_fkey")

def _v10_coordination(conn: sa.Connection) -> None:
    """N coordinators over one database (cloud.coordination): the leader lease with its fencing token, which
    coordinator holds each gateway's session, and telemetry by arrival for the leader's tail."""
    md = sa.MetaData()
    sa.Table(
        "coordinator_leases",
        md,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),  # database clock
        sa.Column("holder_api", sa.String(256), nullable=False, server_default=""),
    )
    sa.Table(
        "gateway_sessions",
        md,
        sa.Column("gateway_id", sa.String(128), primary_key=True),
        sa.Column("coordinator_id", sa.String(128), nullable=False),
        sa.Column("since_ms", sa.BigInteger, nullable=False),
        sa.Index("gateway_sessions_coordinator", "coordinator_id"),
    )
    md.create_all(conn)
    conn.execute(sa.text("CREATE INDEX telemetry_received ON telemetry (received_ms)"))


def _v11_telemetry_by_day(conn: sa.Connection) -> None:
    """PostgreSQL: ``telemetry`` partitioned by range of ``ts_ms`` (the record's sample time, which a resend
    keeps), keyed by (device_id, stream, seq, ts_ms) as a partitioned table's key must hold the partition key;
    every existing row goes to the DEFAULT partition (day partitions are made ahead by the leader,
    ``cloud.store.partitions``). SQLite keeps its one table: nothing changes there."""
    if conn.dialect.name != "postgresql":
        return
    columns = 'device_id, stream, seq, ts_ms, kind, "values", received_ms, ingest_id'
    for ddl in (
        "CREATE TABLE telemetry_by_day (device_id VARCHAR(128) NOT NULL, stream VARCHAR(16) NOT NULL,"
        ' seq BIGINT NOT NULL, ts_ms BIGINT NOT NULL, kind VARCHAR(128) NOT NULL, "values" JSONB NOT NULL,'
        " received_ms BIGINT NOT NULL, ingest_id BIGINT) PARTITION BY RANGE (ts_ms)",
        "CREATE TABLE telemetry_default PARTITION OF telemetry_by_day DEFAULT",
        f"INSERT INTO telemetry_by_day ({columns}) SELECT {columns} FROM telemetry",
        "DROP TABLE telemetry",  # with telemetry_pkey and telemetry_received
        "ALTER TABLE telemetry_by_day RENAME TO telemetry",
        "ALTER TABLE telemetry ADD CONSTRAINT telemetry_pkey PRIMARY KEY (device_id, stream, seq, ts_ms)",
        "CREATE INDEX telemetry_received ON telemetry (received_ms)",
    ):
        conn.exec_driver_sql(ddl)
    conn.exec_driver_sql("ANALYZE telemetry")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "sites, gateways, devices and telemetry", _v1_initial),
    Migration(2, "telemetry streams, gaps, gateway status and commands", _v2_streams_gaps_status_commands),
    Migration(3, "alerts and silences", _v3_alerts_and_silences),
    Migration(4, "firmware releases and deltas", _v4_releases_and_deltas),
    Migration(5, "operators, API tokens, enrollment, identities, revocations, audit log", _v5_identity_access_audit),
    Migration(6, "rollouts and their devices", _v6_rollouts),
    Migration(7, "fleet: lifecycle, inventory, tags, groups, layered config, metrics", _v7_fleet),
    Migration(8, "DDI devices' TargetTokens", _v8_ddi_tokens),
    Migration(9, "metric follower: telemetry.ingest_id and metric_backlog", _v9_metric_follower),
    Migration(10, "coordination: leader lease, gateway sessions, telemetry by arrival", _v10_coordination),
    Migration(11, "telemetry partitioned by day on PostgreSQL", _v11_telemetry_by_day),
)
"""Every migration, oldest first; versions are 1, 2, 3... with no gaps."""

LATEST = MIGRATIONS[-1].version

# a fixed key for pg_advisory_xact_lock: two processes opening one database migrate one at a time
_PG_LOCK_KEY = 0x45_46_4D_49_47  # "EFMIG"


def migrate(conn: sa.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply every migration newer than the database's version; return the versions applied."""
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        versions = [m.version for m in migrations]
        raise StoreError(f"migrations must be numbered 1..{len(migrations)} in order, got {versions}")
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    schema_version.create(conn, checkfirst=True)
    current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
    newest = migrations[-1].version if migrations else 0
    if current > newest:
        raise StoreError(
            f"store schema is at version {current}, newer than this EdgeFleet knows ({newest}): "
            "upgrade EdgeFleet before opening this store"
        )
    applied = []
    for step in migrations[current:]:
        try:
            step.apply(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"migration {step.version} ({step.description}) failed: {exc}") from exc
        conn.execute(sa.insert(schema_version).values(version=step.version, description=step.description))
        applied.append(step.version)
    return applied

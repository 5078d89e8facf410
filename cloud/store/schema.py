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

__all__ = [
    "ALERT_STATES",
    "COMMAND_STATUSES",
    "DELTA_STATUSES",
    "GROUP_KINDS",
    "LIFECYCLE_STATES",
    "RELEASE_STATES",
    "JSON_VALUES",
    "alerts",
    "commands",
    "deltas",
    "gateway_sessions",
    "config_layers",
    "coordinator_leases",
    "device_config",
    "device_tags",
    "devices",
    "gaps",
    "group_members",
    "groups",
    "inventory",
    "lifecycle_history",
    "metric_backlog",
    "metric_points",
    "metric_rollups",
    "gateways",
    "metadata",
    "releases",
    "rollout_devices",
    "rollouts",
    "schema_version",
    "silences",
    "sites",
    "telemetry",
]

metadata = sa.MetaData()

# JSONB on PostgreSQL (indexable, compact); JSON text on SQLite
JSON_VALUES = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# a surrogate key: BIGSERIAL on PostgreSQL, the rowid alias (INTEGER PRIMARY KEY) on SQLite
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

COMMAND_STATUSES = ("queued", "held", "delivered", "done", "failed", "expired")
"""A command's life: queued in the cloud, held durably by its gateway, delivered to the
device, then one final state: done or failed (the device said so) or expired (its TTL passed)."""

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
    # the gateway's newest health report (a flat map) and the gateway's time of it; NULL until one arrives
    sa.Column("status", JSON_VALUES, nullable=True),
    sa.Column("status_ts_ms", sa.BigInteger, nullable=True),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("site_id", sa.String(128), sa.ForeignKey("sites.site_id"), nullable=False, index=True),
    sa.Column("gateway_id", sa.String(128), sa.ForeignKey("gateways.gateway_id"), nullable=False, index=True),
    sa.Column("first_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
    # the highest sequence stored in any of the device's streams (0: known only from a gap report)
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    # lifecycle (cloud.fleet.lifecycle): pending, active, maintenance, quarantined, retired
    sa.Column("state", sa.String(16), nullable=False, server_default="active"),
)

# the primary key (device_id, stream, seq) is what makes ingest at-most-once per record. On PostgreSQL the
# table is partitioned by day of ts_ms (migration 11, cloud.store.partitions) and its key is
# (device_id, stream, seq, ts_ms): a resent record keeps its ts_ms, so it is still stored once
telemetry = sa.Table(
    "telemetry",
    metadata,
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("stream", sa.String(16), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    # ``values`` is also a ColumnCollection method: reach it as telemetry.c["values"]
    sa.Column("values", JSON_VALUES, nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    # the metric_backlog entry of the transaction that stored the row (None before migration 9): the metrics
    # follower (cloud.store.metrics) folds a row only through that entry, so each row is folded once
    sa.Column("ingest_id", sa.BigInteger, nullable=True),
)

# sequence ranges a reporter (the device itself or its gateway) dropped by rule, with the reason
gaps = sa.Table(
    "gaps",
    metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("reporter", sa.String(128), nullable=False),
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), nullable=False),
    sa.Column("stream", sa.String(16), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    # device_id first: reads filter by device; the set is the report's identity (a resent report is one row)
    sa.UniqueConstraint(
        "device_id", "stream", "first_seq", "last_seq", "reason", "reporter", name="gaps_report_key"
    ),
)

# downlink commands, numbered per device (the device runs each number once)
commands = sa.Table(
    "commands",
    metadata,
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("args", JSON_VALUES, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint(
        "status IN ('queued', 'held', 'delivered', 'done', 'failed', 'expired')", name="commands_status"
    ),
)

ALERT_STATES = ("open", "resolved")

# one row per alert (the alert engine's id, ``rule:subject:opened_ms``); an alert opens once and resolves once
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(400), primary_key=True),
    sa.Column("rule", sa.String(128), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),  # a device or gateway id
    sa.Column("severity", sa.String(32), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("opened_ms", sa.BigInteger, nullable=False),
    sa.Column("resolved_ms", sa.BigInteger, nullable=True),
    sa.Column("acked_by", sa.String(128), nullable=True),
    sa.Column("acked_ms", sa.BigInteger, nullable=True),
    # "fired" (announced), "silenced" (open, its fired event held by a silence) or "resolved"
    sa.Column("last_event", sa.String(16), nullable=False),
    sa.Column("last_event_ms", sa.BigInteger, nullable=False),
    sa.Column("detail", JSON_VALUES, nullable=False),
    sa.CheckConstraint("state IN ('open', 'resolved')", name="alerts_state"),
    sa.Index("alerts_state_opened", "state", "opened_ms"),
    sa.Index("alerts_subject", "subject"),
)

# a target (rule name or subject) whose new alerts announce nothing until ``until_ms``
silences = sa.Table(
    "silences",
    metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("until_ms", sa.BigInteger, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("silences_until", "until_ms"),
)

RELEASE_STATES = ("unsigned", "published")
DELTA_STATUSES = ("offered", "not-worth-it", "failed")

# firmware releases (cloud.releases.service): the manifest the cloud built, and once a trusted key signed exactly
# that body, the signed manifest; ``version`` is the text the release was created with
releases = sa.Table(
    "releases",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("hw", JSON_VALUES, nullable=False),  # a list of hardware models
    sa.Column("image_sha256", sa.String(64), nullable=False),  # the artifact DATA/artifacts/<sha256>
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("manifest_body", sa.Text, nullable=False),  # canonical JSON (ASCII): what a signature must cover
    sa.Column("signed_manifest", sa.Text, nullable=True),  # SignedManifest.to_bytes(), once published
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("published_ms", sa.BigInteger, nullable=True),
    sa.Column("security_version", sa.BigInteger, nullable=False),
    sa.CheckConstraint("state IN ('unsigned', 'published')", name="releases_state"),
)

# the delta outcome of each (release, older release) pair tried; only "offered" ones are in the manifest
deltas = sa.Table(
    "deltas",
    metadata,
    sa.Column("release_version", sa.String(64), sa.ForeignKey("releases.version"), primary_key=True),
    sa.Column("from_version", sa.String(64), primary_key=True),
    sa.Column("method", sa.String(64), nullable=True),  # the smallest candidate's, also when not worth it
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),  # the artifact, for an offered delta only
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", JSON_VALUES, nullable=False),  # {"note", "full_size", "ratio", "seconds"}
    sa.CheckConstraint("status IN ('offered', 'not-worth-it', 'failed')", name="deltas_status"),
)

# rollouts (cloud.rollouts): the plan, the engine's persisted header, the command args an install sends
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("rollout_id", sa.String(64), primary_key=True),
    sa.Column("release_version", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("plan", JSON_VALUES, nullable=False),
    sa.Column("header", JSON_VALUES, nullable=False),
    sa.Column("install_args", JSON_VALUES, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint(
        "state IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'aborted')", name="rollouts_state"
    ),
)

# one row per device a rollout targets (skipped ones too, with the reason); ``record`` is the engine's DeviceRecord
rollout_devices = sa.Table(
    "rollout_devices",
    metadata,
    sa.Column("rollout_id", sa.String(64), sa.ForeignKey("rollouts.rollout_id"), primary_key=True),
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("site_id", sa.String(128), nullable=False),
    sa.Column("stage", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("record", JSON_VALUES, nullable=False),
    sa.Index("rollout_devices_device", "device_id"),
)

# --- knowing the fleet (issue 8): inventory, tags, groups, lifecycle, layered config, metrics -------------

LIFECYCLE_STATES = ("pending", "active", "maintenance", "quarantined", "retired")
GROUP_KINDS = ("static", "dynamic")

# the newest inventory a node (device or gateway) reported: a flat map of attributes, kept per node
inventory = sa.Table(
    "inventory",
    metadata,
    sa.Column("node_id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),  # "device" or "gateway"
    sa.Column("attrs", JSON_VALUES, nullable=False),
    sa.Column("reported_ms", sa.BigInteger, nullable=False),  # the node's time of the report
    sa.Column("received_ms", sa.BigInteger, nullable=False),
)

device_tags = sa.Table(
    "device_tags",
    metadata,
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("tag", sa.String(128), primary_key=True),
    sa.Index("device_tags_tag", "tag"),
)

# a static group lists its members; a dynamic group is a saved query (cloud.fleet.query) evaluated when read
groups = sa.Table(
    "groups",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("query", sa.Text, nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint("kind IN ('static', 'dynamic')", name="groups_kind"),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_name", sa.String(128), sa.ForeignKey("groups.name"), primary_key=True),
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Index("group_members_device", "device_id"),
)

# every lifecycle transition, never deleted (a retired device keeps its history)
lifecycle_history = sa.Table(
    "lifecycle_history",
    metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), nullable=False, index=True),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
)

# layered config documents (cloud.fleet.config_layers): kind global/site/group/device, name "" for global
config_layers = sa.Table(
    "config_layers",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("values", JSON_VALUES, nullable=False),  # flat dotted keys
    sa.Column("locked", JSON_VALUES, nullable=False),  # a list of keys
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=False),
    sa.CheckConstraint("kind IN ('global', 'site', 'group', 'device')", name="config_layers_kind"),
)

# per device: the desired config last sent (the merge and its version) and the version it applied
device_config = sa.Table(
    "device_config",
    metadata,
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("desired_version", sa.String(64), nullable=False),
    sa.Column("desired", JSON_VALUES, nullable=False),
    sa.Column("desired_ms", sa.BigInteger, nullable=False),
    sa.Column("applied_version", sa.String(64), nullable=True),
    sa.Column("applied_ms", sa.BigInteger, nullable=True),
)

# raw numeric metrics (one row per device, metric and sample time), kept for the raw retention
metric_points = sa.Table(
    "metric_points",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("metric", sa.String(128), primary_key=True),
    sa.Column("ts_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Index("metric_points_ts", "ts_ms"),
)

# per-minute (width_ms 60000) and per-hour (3600000) aggregates (cloud.fleet.rollup), mergeable
metric_rollups = sa.Table(
    "metric_rollups",
    metadata,
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

# one row per ingest transaction that stored metrics rows, until the metrics follower has folded them:
# ``ranges`` [[device_id, stream, first_seq, last_seq], ...] where the transaction's rows lie (tagged with
# ``telemetry.ingest_id`` = ``id``; ``id`` is never reused: AUTOINCREMENT on SQLite, a sequence on PostgreSQL)
metric_backlog = sa.Table(
    "metric_backlog",
    metadata,
    sa.Column("id", _ROW_ID, primary_key=True, autoincrement=True),
    sa.Column("ranges", JSON_VALUES, nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    sqlite_autoincrement=True,
)

# N coordinators over one database (cloud.coordination, migration 10). One row per lease ("leader"): who holds
# it, its fencing token (bumped by every new term) and when it expires by the database's clock
coordinator_leases = sa.Table(
    "coordinator_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Column("holder_api", sa.String(256), nullable=False, server_default=""),
)

# which coordinator holds each gateway's session (the last one it said Hello to): where its commands go
gateway_sessions = sa.Table(
    "gateway_sessions",
    metadata,
    sa.Column("gateway_id", sa.String(128), primary_key=True),
    sa.Column("coordinator_id", sa.String(128), nullable=False),
    sa.Column("since_ms", sa.BigInteger, nullable=False),
    sa.Index("gateway_sessions_coordinator", "coordinator_id"),
)

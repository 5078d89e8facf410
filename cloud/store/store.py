"""``Store``: the cloud's database and one repository per feature, opened together.

    store = Store.open("sqlite:////var/lib/edgefleet/cloud.db")   # or postgresql+psycopg://...
    store.telemetry.ingest("gw-1", "site-a", records, now_ms)      # what gateways forward
    store.commands.create_command("d1", "reboot", {}, expires_ms, now_ms)
    store.alerts / .releases / .rollouts / .fleet / .metrics / .security
    store.partitions.maintain(now_ms, keep_ms)                     # telemetry day partitions and retention
    store.close()

Each service is handed the repositories it uses (``ReleaseService(store.releases, ...)``,
``SecurityService(store.security, store.fleet, ...)``), never the whole store. ``Store``
itself holds no queries: it builds the repositories over one ``Database`` and wires the
few that ingest writes into (``telemetry`` keeps the fleet's inventory, the metric
backlog, alerts raised at a site and command reports in its own transaction; the
metrics follower, ``metrics.follow``, folds the backlog into points and rollups later).

The node runtime (``cloud.driver``) runs its store calls on the one store thread
(``cloud.store_thread``); the methods below the repositories are that thread's whole
vocabulary, each one line handing the call to the repository that owns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from cloud.store.alerts import AlertRecords
from cloud.store.commands import CommandRecords
from cloud.store.database import Database
from cloud.store.ddi import DdiRecords
from cloud.store.fleet import FleetRecords
from cloud.store.metrics import MetricRecords
from cloud.store.partitions import TelemetryPartitions
from cloud.store.releases import ReleaseRecords
from cloud.store.rollouts import RolloutRecords
from cloud.store.security import SecurityRecords
from cloud.store.telemetry import Batch, IngestResult, TelemetryRecords
from common.protocol.messages import ForwardRecord

__all__ = ["Store"]


class Store:
    """The database and its repositories. Build it with ``Store.open(url)`` (or around an open ``Database``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.commands = CommandRecords(db)
        self.alerts = AlertRecords(db)
        self.releases = ReleaseRecords(db)
        self.rollouts = RolloutRecords(db)
        self.fleet = FleetRecords(db)
        self.metrics = MetricRecords(db)
        self.security = SecurityRecords(db)
        self.ddi = DdiRecords(db)
        self.partitions = TelemetryPartitions(db)
        self.telemetry = TelemetryRecords(
            db, commands=self.commands, fleet=self.fleet, metrics=self.metrics, alerts=self.alerts
        )

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to ``url``, migrate, and build the repositories (``StoreError`` names the cause)."""
        return cls(Database.open(url))

    def close(self) -> None:
        """Release every pooled connection. Idempotent; later calls raise ``StoreError``."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for diagnostics and tests)."""
        return self.db.engine

    @property
    def applied_migrations(self) -> tuple[int, ...]:
        """Migration versions this ``open`` applied; empty when the store was already current."""
        return self.db.applied_migrations

    # -- what the node runtime calls on the store thread (cloud.driver) --------------------------

    def ingest(self, gateway_id: str, site: str, records: Sequence[ForwardRecord], now_ms: int) -> IngestResult:
        return self.telemetry.ingest(gateway_id, site, records, now_ms)

    def ingest_many(self, batches: Sequence[Batch], now_ms: int) -> list[IngestResult]:
        return self.telemetry.ingest_many(batches, now_ms)

    def follow_metrics(self, max_rows: int = 20_000) -> int:
        return self.metrics.follow(max_rows)

    def touch_gateway(self, gateway_id: str, site: str, now_ms: int) -> None:
        self.telemetry.touch_gateway(gateway_id, site, now_ms)

    def touch_gateways(self, seen: Sequence[tuple[str, str]], now_ms: int) -> None:
        self.telemetry.touch_gateways(seen, now_ms)

    def device_gateway(self, device_id: str) -> str | None:
        return self.telemetry.device_gateway(device_id)

    def expire_commands(self, now_ms: int) -> list[tuple[str, int]]:
        return self.commands.expire_commands(now_ms)

    def commands_for(self, device_ids: Sequence[str], statuses: Sequence[str] = ("queued",)) -> list[dict[str, Any]]:
        return self.commands.commands_for(device_ids, statuses)

    def commands_for_gateway(self, gateway_id: str, statuses: Sequence[str] = ("queued",)) -> list[dict[str, Any]]:
        return self.commands.commands_for_gateway(gateway_id, statuses)

    def mark_command(self, device_id: str, seq: int, status: str, detail: str, now_ms: int) -> bool:
        return self.commands.mark_command(device_id, seq, status, detail, now_ms)

    def save_alerts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.alerts.save_alerts(rows)

    def list_alerts(self, state: str = "open", *, limit: int = 500) -> list[dict[str, Any]]:
        return self.alerts.list_alerts(state, limit=limit)

    def active_silences(self, now_ms: int) -> list[dict[str, Any]]:
        return self.alerts.active_silences(now_ms)

    def devices_in_state(self, state: str) -> list[str]:
        return self.fleet.devices_in_state(state)

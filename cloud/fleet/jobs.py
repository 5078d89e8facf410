"""The cloud's periodic fleet work, on an apscheduler ``AsyncIOScheduler`` in the cloud's event loop.

    jobs = start_fleet_jobs(FleetJobs(), store, store_thread, alerts, on_command, now_ms)
    ...
    jobs.stop()

Jobs (each runs its store work on the cloud's one store thread, never on the loop):

    retention      every ``retention_interval_s``: ``MetricRecords.apply_retention`` (raw, minute, hour tiers)
    partitions     at start and every ``partitions_interval_s``: ``TelemetryPartitions.maintain``: telemetry's
                   day partitions (PostgreSQL) made ``partitions_ahead_days`` ahead, and telemetry retention
                   (``telemetry_keep_ms``; None keeps everything): old day partitions dropped whole
    config push    every ``config_push_s``: desired configs that changed (a layer, a group's members,
                   a device's inventory moving it into a dynamic group) are recorded and queued as
                   ``config`` commands (``cloud.fleet.config_push``), then pushed to connected gateways
    fleet inputs   every ``refresh_s``: how long each device has been silent (the ghost_device rule's
                   ``ghost.silent_s``) and the published firmware releases (the firmware_behind rule)

A job that fails logs the error and runs again at its next time (its work is idempotent).
A retirement (``cloud.fleet.lifecycle.ON_RETIRE``) makes the alert service forget the device: its open alerts
resolve and it raises no new ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from cloud.fleet import lifecycle
from cloud.fleet.config_push import push_configs
from cloud.fleet.lifecycle import DEFAULT_GHOST_S
from cloud.fleet.rollup import DEFAULT_RETENTION, Retention
from common.errors import StoreError

if TYPE_CHECKING:
    from cloud.alerts.service import AlertService
    from cloud.fleet.ports import Stores

__all__ = ["DEFAULT_TELEMETRY_KEEP_MS", "FleetJobs", "RunningJobs", "make_day_partitions", "start_fleet_jobs"]

log = logging.getLogger("edgefleet.cloud.fleet")


@dataclass(frozen=True)
class RunningJobs:
    scheduler: AsyncIOScheduler
    retire_hook: Callable[[dict[str, Any]], None]

    def stop(self) -> None:
        if self.retire_hook in lifecycle.ON_RETIRE:
            lifecycle.ON_RETIRE.remove(self.retire_hook)
        self.scheduler.shutdown(wait=False)


def make_day_partitions(store: Stores, ahead_days: int, now_ms: int) -> None:
    """At a coordinator's start, before it takes a batch: telemetry's day partitions from today (PostgreSQL; a
    no-op on SQLite). Made by the leader's job once batches flow, they hold every writer while they are made
    (``TelemetryPartitions.maintain`` locks telemetry against writers), and until then today's rows go to the
    default partition. Retention is left to the leader's job; a failure is logged and that job makes them."""
    try:
        store.partitions.maintain(now_ms, None, ahead_days)
    except StoreError as exc:
        log.warning("making telemetry's day partitions at start failed (the leader's job retries)",
                    extra={"error": str(exc)})


DEFAULT_TELEMETRY_KEEP_MS: int | None = None
"""Telemetry rows are kept for ever unless the operator sets a retention: the cutoff is by the record's sample
time, so a default would silently delete the data of a device whose clock is far behind."""


@dataclass(frozen=True)
class FleetJobs:
    retention: Retention = field(default_factory=lambda: DEFAULT_RETENTION)
    retention_interval_s: float = 300.0
    telemetry_keep_ms: int | None = DEFAULT_TELEMETRY_KEEP_MS
    partitions_interval_s: float = 3600.0
    partitions_ahead_days: int = 3
    config_push_s: float = 30.0
    refresh_s: float = 30.0
    ghost_after_s: float = DEFAULT_GHOST_S  # `devices ghosts` default; the alert's threshold is its rule's


def start_fleet_jobs(
    jobs: FleetJobs,
    store: Stores,
    store_thread: Executor,
    alerts: AlertService,
    on_command: Callable[[str, int], None],
    now_ms: Callable[[], int],
) -> RunningJobs:
    """Start the scheduler with the four jobs on the running loop, and the retire hook; ``stop()`` ends both."""
    loop = asyncio.get_running_loop()

    async def on_store(fn: Callable[[], Any], what: str) -> Any:
        try:
            return await loop.run_in_executor(store_thread, fn)
        except StoreError as exc:
            log.error(what, extra={"error": str(exc)})
            return None

    async def retention() -> None:
        deleted = await on_store(lambda: store.metrics.apply_retention(jobs.retention, now_ms()), "metric retention failed")
        if deleted and any(deleted.values()):
            log.info("metric retention", extra={f"deleted_{k}": v for k, v in deleted.items()})

    async def partitions() -> None:
        done = await on_store(lambda: store.partitions.maintain(now_ms(), jobs.telemetry_keep_ms,
                                                                jobs.partitions_ahead_days),
                              "telemetry partitions and retention failed")
        if done and any(done.values()):
            log.info("telemetry partitions and retention", extra={f"telemetry_{k}": v for k, v in done.items()})

    async def config_push() -> None:
        result = await on_store(lambda: push_configs(store.fleet, store.commands, now_ms()), "config push failed")
        if result is None:
            return
        made, problems = result
        for problem in problems:
            log.error("config not pushed", extra={"error": problem})
        for device_id, seq in made:
            on_command(device_id, seq)
        if made:
            log.info("config queued", extra={"devices": len(made)})

    async def fleet_inputs() -> None:
        def read() -> tuple[dict[str, float], list[str]]:
            now = now_ms()
            silent = {d["device_id"]: (now - d["last_seen_ms"]) / 1000 for d in store.telemetry.list_devices()
                      if d.get("state") != "retired"}
            return silent, [r["version"] for r in store.releases.list_releases("published")]

        result = await on_store(read, "reading fleet inputs failed")
        if result is not None:
            silent, releases = result
            alerts.observe_silences(silent, now_ms())
            alerts.set_releases(releases)

    def retired(row: dict[str, Any]) -> None:
        """A device retired (on whichever thread committed it): its open alerts resolve, nothing new opens."""
        loop.call_soon_threadsafe(alerts.engine.forget, row["device_id"])

    lifecycle.ON_RETIRE.append(retired)
    scheduler = AsyncIOScheduler(event_loop=loop)
    scheduler.add_job(retention, "interval", seconds=jobs.retention_interval_s, id="retention", coalesce=True,
                      max_instances=1)
    scheduler.add_job(partitions, "interval", seconds=jobs.partitions_interval_s, id="partitions", coalesce=True,
                      max_instances=1)
    scheduler.add_job(config_push, "interval", seconds=jobs.config_push_s, id="config_push", coalesce=True,
                      max_instances=1)
    scheduler.add_job(fleet_inputs, "interval", seconds=jobs.refresh_s, id="fleet_inputs", coalesce=True,
                      max_instances=1)
    scheduler.start()
    for job in (partitions, fleet_inputs, config_push):  # and once now, not only after the first interval
        loop.create_task(job())
    return RunningJobs(scheduler, retired)

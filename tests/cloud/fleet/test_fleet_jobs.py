"""The cloud's fleet jobs on a real apscheduler in an event loop: a changed desired config is queued and
pushed, ghost silences and published releases reach the alert service, retention runs, a retirement makes the
alert service forget the device, and stop() removes the hook."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloud.alerts.service import AlertService, AlertSettings
from cloud.fleet import lifecycle
from cloud.fleet.jobs import FleetJobs, start_fleet_jobs
from cloud.fleet.rollup import Retention
from cloud.store import Store
from common.protocol.messages import ForwardRecord

T0 = 1_700_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _until(predicate, what: str) -> None:
    for _ in range(400):  # polls; the jobs run every 50 ms
        if predicate():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.anyio
async def test_jobs_push_config_feed_alerts_apply_retention_and_forget_retired(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    store.telemetry.ingest("gw-1", "s", [ForwardRecord("d1", "bulk", 1, T0, "metrics", {"t": 1.0}),
                               ForwardRecord("d2", "bulk", 1, T0, "metrics", {})], T0)
    store.fleet.put_layer("global", "", {"rate": 2}, [], "ops", T0)
    alerts = AlertService(AlertSettings(), liveness_ms=3000)
    pushed: list[tuple[str, int]] = []
    now = [T0 + 8 * 86400_000]  # a week and a day later: both devices are ghosts
    thread = ThreadPoolExecutor(1)
    jobs = FleetJobs(retention=Retention(60_000, 3_600_000, 86_400_000), retention_interval_s=0.05,
                     config_push_s=0.05, refresh_s=0.05)
    running = start_fleet_jobs(jobs, store, thread, alerts, lambda d, s: pushed.append((d, s)), lambda: now[0])
    try:
        await _until(lambda: sorted(d for d, _ in pushed) == ["d1", "d2"], "config pushed to both devices")
        assert [c["name"] for c in store.commands.list_commands("d1")] == ["config"]
        await _until(lambda: store.metrics.metric_series(["d1"], 0, now[0], "raw") == [], "raw retention")

        def ghosts() -> set[str]:
            alerts.tick(now[0])  # the cloud's alert timer does this every second
            return {a.subject for a in alerts.engine.open_alerts() if a.rule == "ghost_device"}

        await _until(lambda: ghosts() == {"d1", "d2"}, "ghost_device for both")
        lifecycle.set_state(store.fleet, "d1", "retired", "ops", "gone", now[0])
        await _until(lambda: ghosts() == {"d2"}, "the retired device forgotten")
    finally:
        running.stop()
        thread.shutdown()
        store.close()
    assert running.retire_hook not in lifecycle.ON_RETIRE

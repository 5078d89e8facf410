"""The cloud's fleet jobs on a real apscheduler in an event loop: a changed desired config is queued and
pushed, ghost silences and published releases reach the alert service, retention runs, a retirement makes the
alert service forget the device (also when a read of the devices taken before it is answered after it), and
stop() removes the hook. The test waits on the scheduler's job events, not on a clock."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED

from cloud.alerts.service import AlertService, AlertSettings
from cloud.fleet import lifecycle
from cloud.fleet.jobs import FleetJobs, RunningJobs, start_fleet_jobs
from cloud.fleet.rollup import Retention
from cloud.store import Store
from common.protocol.messages import ForwardRecord
from tests.waits import HANG_GUARD_S, until_signalled

T0 = 1_700_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class HeldReads:
    """The store, whose ``telemetry.list_devices`` can be held on the store thread after it has read: a read taken
    before a retirement and answered after it, the interleaving that once kept a retired device's
    ghost_device alert open for good (the stale silences brought it back after ``forget``)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.hold = False
        self.taken = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @property
    def telemetry(self) -> HeldReads:
        return self  # the jobs read the devices through the telemetry repository

    def list_devices(self) -> list[dict[str, Any]]:
        rows = self._store.telemetry.list_devices()
        if self.hold:
            self.hold = False
            self.taken.set()
            assert self.release.wait(HANG_GUARD_S), "the test never released the held read"
        return rows


class JobRuns:
    """Counts the scheduler's finished job runs (failed or not) and sets ``signal`` on the loop at each."""

    def __init__(self, running: RunningJobs) -> None:
        self.count = 0
        self.signal = asyncio.Event()
        loop = asyncio.get_running_loop()
        running.scheduler.add_listener(lambda _: loop.call_soon_threadsafe(self._ran), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def _ran(self) -> None:
        self.count += 1
        self.signal.set()


@pytest.mark.anyio
async def test_jobs_push_config_feed_alerts_apply_both_retentions_and_forget_retired(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    store.telemetry.ingest("gw-1", "s", [ForwardRecord("d1", "bulk", 1, T0, "metrics", {"t": 1.0}),
                               ForwardRecord("d2", "bulk", 1, T0, "metrics", {})], T0)
    assert store.metrics.follow() == 2 and len(store.metrics.metric_series(["d1"], 0, T0 + 1, "raw")) == 1
    store.fleet.put_layer("global", "", {"rate": 2}, [], "ops", T0)
    alerts = AlertService(AlertSettings(), liveness_ms=3000)
    pushed: list[tuple[str, int]] = []
    now = [T0 + 8 * 86400_000]  # a week and a day later: both devices are ghosts
    thread = ThreadPoolExecutor(1)
    held = HeldReads(store)
    jobs = FleetJobs(retention=Retention(60_000, 3_600_000, 86_400_000), retention_interval_s=0.05,
                     telemetry_keep_ms=7 * 86400_000, partitions_interval_s=0.05, config_push_s=0.05, refresh_s=0.05)
    running = start_fleet_jobs(jobs, held, thread, alerts, lambda d, s: pushed.append((d, s)), lambda: now[0])
    runs = JobRuns(running)
    ran = runs.signal
    try:
        await until_signalled(lambda: sorted(d for d, _ in pushed) == ["d1", "d2"], "config pushed to both devices",
                              signal=ran)
        assert [c["name"] for c in store.commands.list_commands("d1")] == ["config"]
        await until_signalled(lambda: store.metrics.metric_series(["d1"], 0, now[0], "raw") == [], "raw retention",
                              signal=ran)
        await until_signalled(lambda: store.telemetry.telemetry_summary()["rows"] == 0, "telemetry retention",
                              signal=ran)  # the rows of T0 are 8 days old, kept 7

        def ghosts() -> set[str]:
            alerts.tick(now[0])  # the cloud's alert timer does this every second
            return {a.subject for a in alerts.engine.open_alerts() if a.rule == "ghost_device"}

        await until_signalled(lambda: ghosts() == {"d1", "d2"}, "ghost_device for both", signal=ran)

        # the fleet-inputs job reads both devices' silences, d1 is retired, then the stale read is fed
        held.hold = True
        await asyncio.get_running_loop().run_in_executor(None, held.taken.wait, HANG_GUARD_S)
        assert held.taken.is_set(), "the fleet-inputs job never read the devices"
        lifecycle.set_state(store.fleet, "d1", "retired", "ops", "gone", now[0])
        await asyncio.sleep(0)  # the retire hook's forget runs on the loop
        held.release.set()
        await until_signalled(lambda: ghosts() == {"d2"}, "the retired device forgotten", signal=ran)
        later = runs.count + 6  # and it stays forgotten through the next runs of every job
        await until_signalled(lambda: runs.count >= later, "six more job runs", signal=ran)
        assert ghosts() == {"d2"}
    finally:
        held.release.set()
        running.stop()
        thread.shutdown()
        store.close()
    assert running.retire_hook not in lifecycle.ON_RETIRE

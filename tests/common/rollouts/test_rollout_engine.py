"""The sans-IO rollout engine on a fake clock and a fake fleet (issue #6, point 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from rollout_fakes import FakeFleet, devices

from common.errors import RolloutError
from common.rollouts import (
    Approve,
    Control,
    DeviceEvent,
    DeviceHealth,
    DeviceInfo,
    DeviceReport,
    DeviceSeen,
    DeviceState,
    Install,
    Persist,
    ReleaseInfo,
    Revert,
    RolloutEngine,
    RolloutPlan,
    RolloutState,
    Threshold,
    Tick,
)

T0 = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
REL = ReleaseInfo("2.0.0", ("board-a",), security_version=3)


def plan(**kw) -> RolloutPlan:
    base = dict(release=REL, canary=2, waves=("50%", "100%"), soak_s=30, timeout_s=600, backoff_s=10,
                max_installing_per_site=100, max_starts_per_minute=10_000)
    return RolloutPlan(**(base | kw))


def started(p: RolloutPlan, devs: list[DeviceInfo], now: int = T0, bad=(), silent=(), install_ms=60_000, **kw) -> FakeFleet:
    eng = RolloutEngine("r1", p, **kw)
    eng.target(devs)
    fleet = FakeFleet(eng, now, install_ms=install_ms, bad=set(bad), silent=set(silent))
    fleet.feed(Control("start"))
    return fleet


def test_good_release_goes_canary_then_waves_and_completes():
    fleet = started(plan(), devices(2, 10))
    fleet.run(T0 + 3_600_000)
    eng = fleet.engine
    assert eng.state == RolloutState.COMPLETED, eng.reason
    assert all(r.state == DeviceState.SUCCEEDED for r in eng.devices.values())
    # stages in order: no wave-2 device installed before every canary device committed and soaked
    order = [(t, eng.devices[i.device_id].stage) for t, i in fleet.installs]
    first = {s: min(t for t, st in order if st == s) for s in (0, 1, 2)}
    assert first[0] < first[1] < first[2]
    assert first[1] - first[0] >= 60_000 + 30_000  # install time + soak
    assert sum(1 for r in eng.devices.values() if r.stage == 0) == 2


def test_failing_canary_halts_the_rollout_with_no_wave_started():
    devs = devices(2, 10)
    p = plan()
    eng_probe = RolloutEngine("r1", p)
    eng_probe.target(devs)
    canary = {d for d, r in eng_probe.devices.items() if r.stage == 0}
    fleet = started(p, devs, bad=canary)
    fleet.run(T0 + 3_600_000)
    eng = fleet.engine
    assert eng.state == RolloutState.PAUSED
    assert "failure threshold" in eng.reason
    assert {i.device_id for _, i in fleet.installs} <= canary
    assert eng.stage == 0
    assert all(r.state == DeviceState.PENDING for r in eng.devices.values() if r.stage > 0)


def test_error_threshold_aborts_only_after_the_minimum_sample():
    devs = devices(1, 20)
    p = plan(canary=10, failure=Threshold.parse("30%", "f"), min_sample=8, on_failure="abort", soak_s=0)
    probe = RolloutEngine("r1", p)
    probe.target(devs)
    canary = sorted(d for d, r in probe.devices.items() if r.stage == 0)
    fleet = started(p, devs, bad=canary[:3], install_ms=5_000)  # 3 of 10 canary devices fail: 30% once 8+ finished
    fleet.run(T0 + 4_000)
    assert fleet.engine.state == RolloutState.RUNNING
    fleet.run(T0 + 600_000)
    eng = fleet.engine
    assert eng.state == RolloutState.ABORTED
    assert "3 of 8 finished" in eng.reason  # tripped at the minimum sample, not at 3 of 3
    assert all(eng.devices[i.device_id].stage == 0 for _, i in fleet.installs)
    # a share below the sample never trips: 1 failure out of 1 finished is not 100% of 8
    assert not Threshold.parse("30%", "f").reached(1, 1, 8)


def _window_oracle(zone: str, day: datetime, hour: int, minute: int, duration: timedelta) -> list[tuple[datetime, datetime]]:
    """Every window interval in UTC for a daily window at a local wall time, both folds (independent of shaping)."""
    tz = ZoneInfo(zone)
    out = []
    for offset in range(-1, 6):
        d = day + timedelta(days=offset)
        for fold in (0, 1):
            start = datetime(d.year, d.month, d.day, hour, minute, tzinfo=tz, fold=fold).astimezone(UTC)
            out.append((start, start + duration))
    return out


@pytest.mark.parametrize(
    "zone,day",
    [
        ("Europe/Berlin", datetime(2026, 3, 29)),  # spring forward: 02:30 does not exist
        ("Europe/Berlin", datetime(2026, 10, 25)),  # fall back: 02:30 happens twice
        ("America/New_York", datetime(2026, 3, 8)),
        ("America/New_York", datetime(2026, 11, 1)),
    ],
)
def test_nothing_installs_outside_the_maintenance_window_on_dst_days(zone, day):
    start = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)) - timedelta(days=1)
    t0 = int(start.astimezone(UTC).timestamp() * 1000)
    p = plan(canary=4, waves=("100%",), soak_s=60, max_installing_per_site=2,
             windows={"*": (("30 2 * * *", 3600.0),)}, timezones={"*": zone})
    fleet = started(p, devices(1, 40), now=t0)
    fleet.install_ms = 10 * 60_000
    fleet.run(t0 + 4 * 86_400_000, step_ms=60_000)
    allowed = _window_oracle(zone, day, 2, 30, timedelta(hours=1))
    assert fleet.installs
    for t, _ in fleet.installs:
        at = datetime.fromtimestamp(t / 1000, UTC)
        assert any(a <= at < b for a, b in allowed), f"install at {at} outside every window"
    # the DST day itself has its window (never skipped): installs happen on it, in local date terms
    local_days = {datetime.fromtimestamp(t / 1000, UTC).astimezone(ZoneInfo(zone)).date() for t, _ in fleet.installs}
    assert day.date() in local_days
    # downloads went ahead outside the window
    assert fleet.downloads and fleet.downloads[0][0] < fleet.installs[0][0]


def test_no_install_starts_in_the_last_seconds_of_a_window():
    """An install the window closes on within MIN_WINDOW_LEFT_MS waits for the next window."""
    from common.rollouts.engine import MIN_WINDOW_LEFT_MS

    start = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
    t0 = int(start.timestamp() * 1000)
    p = plan(canary=3, waves=("100%",), soak_s=0, windows={"*": (("0 3 * * *", 60.0),)}, timezones={"*": "UTC"})
    closes = t0 + 3_600_000 + 60_000  # 03:01 UTC
    fleet = started(p, devices(1, 6), now=closes - MIN_WINDOW_LEFT_MS + 1)
    fleet.run(closes + 1000, step_ms=1000)
    assert fleet.installs == []  # too late in that window
    fleet.run(closes + 86_400_000, step_ms=5000)
    assert fleet.installs and all(t >= closes + 86_400_000 - 60_000 for t, _ in fleet.installs)


def test_rate_limits_hold_per_site_and_per_minute():
    p = plan(canary=5, waves=("100%",), soak_s=0, max_installing_per_site=3, max_starts_per_minute=4)
    fleet = started(p, devices(3, 20), install_ms=90_000)
    installing: dict[str, set[str]] = {}
    max_seen = 0
    while fleet.now_ms < T0 + 7_200_000 and fleet.engine.state == RolloutState.RUNNING:
        fleet.run(fleet.now_ms + 1000)
        for site in ("site-1", "site-2", "site-3"):
            n = sum(1 for r in fleet.engine.devices.values()
                    if r.site == site and r.state in (DeviceState.INSTALLING, DeviceState.TRIAL))
            max_seen = max(max_seen, n)
            assert n <= 3
    assert fleet.engine.state == RolloutState.COMPLETED
    assert max_seen == 3
    times = sorted(t for t, _ in fleet.installs)
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 60_000) <= 4
    assert len(times) == 60


def test_site_offline_for_a_whole_stage_finishes_it_locally_and_reports_afterwards():
    """The cloud coordinates (execute=False); site-2's gateway drives its devices from its plan while cut off."""
    devs = devices(2, 10)
    p = plan(canary=2, waves=("50%", "100%"))
    cloud = RolloutEngine("r1", p, execute=False)
    cloud.target(devs)
    cloud.handle(Control("start"), T0)
    sites = {}
    for s in ("site-1", "site-2"):
        eng = RolloutEngine("r1", p, site=s, approved_stage=1)  # the cloud approved canary and wave 1
        eng.target(devs, stages={d: r.stage for d, r in cloud.devices.items() if r.site == s})
        sites[s] = FakeFleet(eng, T0)
        sites[s].feed(Control("start"))
    # site-2's uplink is down for the whole of wave 1: nothing it does reaches the cloud
    for f in sites.values():
        f.run(T0 + 1_800_000)
    for s, f in sites.items():
        assert f.engine.stage == 1  # finished wave 1 locally, and did not start wave 2: not approved
        assert all(r.state == DeviceState.SUCCEEDED for r in f.engine.devices.values() if r.stage <= 1)
        assert all(r.state == DeviceState.PENDING for r in f.engine.devices.values() if r.stage == 2)
    # only site-1 reported so far: the cloud waits for site-2's part of each stage
    for r in sites["site-1"].engine.devices.values():
        cloud.handle(DeviceReport(r.device_id, DeviceEvent.COMMIT, state=r.state), T0 + 1_800_000)
    assert cloud.state == RolloutState.RUNNING and cloud.stage <= 1
    # the link comes back: site-2 reconciles, the cloud converges to the sites' truth and approves wave 2
    effects = []
    for r in sites["site-2"].engine.devices.values():
        effects += cloud.handle(DeviceReport(r.device_id, DeviceEvent.COMMIT, state=r.state), T0 + 1_800_000)
    for t in range(T0 + 1_800_000, T0 + 2_000_000, 10_000):
        effects += cloud.handle(Tick(), t)
    truth = {d: r.state for f in sites.values() for d, r in f.engine.devices.items()}
    assert {d: r.state for d, r in cloud.devices.items()} == truth
    assert Approve(2) in effects
    assert not any(isinstance(e, Install) for e in effects)  # the coordinator never drives devices itself


def test_local_failure_threshold_halts_a_site_on_its_own():
    devs = devices(1, 10)
    p = plan(canary=3, waves=("100%",), failure=Threshold(count=5), local_failure=Threshold(count=1))
    eng = RolloutEngine("r1", p, site="site-1", approved_stage=1)
    eng.target(devs)
    fleet = FakeFleet(eng, T0, bad={d.device_id for d in devs})
    fleet.feed(Control("start"))
    fleet.run(T0 + 600_000)
    assert eng.state == RolloutState.PAUSED and "failure threshold 1" in eng.reason
    assert len(fleet.installs) == 3


def test_timeouts_retry_with_backoff_then_give_up():
    devs = devices(1, 3)
    p = plan(canary=3, waves=("100%",), timeout_s=60, max_retries=2, backoff_s=10, failure=Threshold(count=2),
             success=Threshold(percent=60))
    silent = devs[0].device_id
    fleet = started(p, devs, silent=[silent], install_ms=20_000)
    fleet.run(T0 + 3_600_000)
    tries = [t for t, i in fleet.installs if i.device_id == silent]
    assert len(tries) == 0  # the silent device never received anything; the engine's own record counts attempts
    rec = fleet.engine.devices[silent]
    assert rec.attempts == 3 and rec.exhausted and rec.state == DeviceState.TIMED_OUT
    assert fleet.engine.counters["timeouts"] == 3 and fleet.engine.counters["retries"] == 2
    # the backoff doubles: attempts start at t0, t0+60+10, t0+70+60+20
    starts = sorted({d["started_ms"] for p in fleet.persisted for d in p.devices if d["device_id"] == silent} - {0})
    assert [s - T0 for s in starts] == [0, 70_000, 150_000]
    assert fleet.engine.state == RolloutState.COMPLETED  # 1 failure < threshold 2, 2 of 3 >= 60%: completes
    # with 100% needed, a stage that settled short of it halts instead of hanging
    strict = started(plan(canary=3, waves=("100%",), timeout_s=60, max_retries=0, failure=Threshold(count=2)),
                     devs, silent=[silent], install_ms=20_000)
    strict.run(T0 + 600_000)
    assert strict.engine.state == RolloutState.PAUSED and "2 of 3 devices updated" in strict.engine.reason


def test_health_gate_compares_updated_devices_with_the_rest():
    devs = devices(1, 10)
    p = plan(canary=2, waves=("100%",), soak_s=120, metric_rules=(), heartbeat_s=10)
    fleet = started(p, devs)
    fleet.run(T0 + 61_000)
    canary = [d for d, r in fleet.engine.devices.items() if r.stage == 0]
    assert all(fleet.engine.devices[d].state == DeviceState.SUCCEEDED for d in canary)
    fleet.feed(DeviceHealth(canary[0], "reboot"))
    fleet.run(T0 + 400_000)
    assert fleet.engine.state == RolloutState.PAUSED
    assert "health gate" in fleet.engine.reason and "rebooted unexpectedly" in fleet.engine.reason
    assert all(fleet.engine.devices[i.device_id].stage == 0 for _, i in fleet.installs)


def test_health_gate_passes_when_the_not_yet_updated_devices_are_as_unhealthy():
    devs = devices(1, 4)
    p = plan(canary=2, waves=("100%",), soak_s=60, heartbeat_s=0)
    fleet = started(p, devs)
    fleet.run(T0 + 61_000)
    ids = sorted(fleet.engine.devices, key=lambda d: fleet.engine.devices[d].stage)
    fleet.feed(DeviceHealth(ids[0], "reboot"))  # one of 2 updated
    fleet.feed(DeviceHealth(ids[2], "reboot"))  # one of 2 not yet updated: a site-wide power blip
    fleet.run(T0 + 600_000)
    assert fleet.engine.state == RolloutState.COMPLETED, fleet.engine.reason


def test_metric_rule_breaks_the_gate():
    from common.rollouts import MetricRule

    devs = devices(1, 4)
    p = plan(canary=2, waves=("100%",), soak_s=60, heartbeat_s=0, metric_rules=(MetricRule.parse("cpu < 90"),))
    fleet = started(p, devs)
    fleet.run(T0 + 61_000)
    canary = [d for d, r in fleet.engine.devices.items() if r.stage == 0]
    fleet.feed(DeviceHealth(canary[0], "metrics", {"cpu": 97.0}))
    fleet.run(T0 + 600_000)
    assert fleet.engine.state == RolloutState.PAUSED and "cpu < 90" in fleet.engine.reason


def test_versions_security_floor_and_hardware_are_refused_with_a_reason():
    devs = [
        DeviceInfo("newer", "s", "board-a", "3.0.0"),
        DeviceInfo("same", "s", "board-a", "2.0.0"),
        DeviceInfo("floor", "s", "board-a", "1.0.0", security_floor=5),
        DeviceInfo("other-hw", "s", "board-z", "1.0.0"),
        DeviceInfo("ok", "s", "board-a", "1.0.0"),
    ]
    eng = RolloutEngine("r1", plan())
    eng.target(devs)
    reasons = {d: r.reason for d, r in eng.devices.items() if r.state == DeviceState.SKIPPED}
    assert set(reasons) == {"newer", "same", "floor", "other-hw"}
    assert "newer than 2.0.0" in reasons["newer"] and "floor 5" in reasons["floor"] and "board-z" in reasons["other-hw"]
    eng2 = RolloutEngine("r2", plan(allow_downgrade=True, allow_below_floor=True))
    eng2.target(devs)
    assert {d for d, r in eng2.devices.items() if r.state == DeviceState.SKIPPED} == {"same", "other-hw"}


def test_devices_whose_inventory_lacks_the_releases_update_module_are_refused_with_a_reason():
    rel = ReleaseInfo("2.0.0", ("board-a",), security_version=3, module="file")
    devs = [
        DeviceInfo("rootfs-only", "s", "board-a", "1.0.0", update_modules=("rootfs-image",)),
        DeviceInfo("has-file", "s", "board-a", "1.0.0", update_modules=("rootfs-image", "file", "script")),
        DeviceInfo("unreported", "s", "board-a", "1.0.0"),  # an older agent: the device checks the manifest itself
    ]
    eng = RolloutEngine("r1", plan(release=rel))
    eng.target(devs)
    reasons = {d: r.reason for d, r in eng.devices.items() if r.state == DeviceState.SKIPPED}
    assert list(reasons) == ["rootfs-only"]
    assert "update module 'file'" in reasons["rootfs-only"] and "rootfs-image" in reasons["rootfs-only"]
    eng = RolloutEngine("r2", plan())  # a rootfs-image release: every device listing it, or not reporting, is fine
    eng.target(devs)
    assert {d for d, r in eng.devices.items() if r.state == DeviceState.SKIPPED} == set()


def test_the_release_module_survives_the_plan_json_and_the_default_is_left_out():
    p = plan(release=ReleaseInfo("2.0.0", ("board-a",), 3, module="script"))
    assert RolloutPlan.from_dict(p.to_dict()).release.module == "script"
    assert "module" not in plan().to_dict()["release"]
    assert RolloutPlan.from_dict(plan().to_dict()).release.module == "rootfs-image"


def test_devices_in_maintenance_quarantined_retired_or_pending_are_skipped_with_their_state():
    devs = [DeviceInfo(f"{state}-1", "s", "board-a", "1.0.0", state=state)
            for state in ("active", "maintenance", "quarantined", "retired", "pending")]
    eng = RolloutEngine("r1", plan())
    eng.target(devs)
    reasons = {d: r.reason for d, r in eng.devices.items() if r.state == DeviceState.SKIPPED}
    assert set(reasons) == {"maintenance-1", "quarantined-1", "retired-1", "pending-1"}
    assert "device is maintenance" in reasons["maintenance-1"]


def test_continuous_targeting_picks_up_a_device_that_joins_while_running():
    fleet = started(plan(canary=1, waves=("100%",)), devices(1, 3))
    fleet.run(T0 + 30_000)
    fleet.feed(DeviceSeen(DeviceInfo("late", "site-1", "board-a", "1.0.0")))
    fleet.run(T0 + 3_600_000)
    assert fleet.engine.devices["late"].state == DeviceState.SUCCEEDED
    assert fleet.engine.state == RolloutState.COMPLETED


def test_abort_stops_new_installs_at_once_and_can_send_updated_devices_back():
    fleet = started(plan(canary=2, waves=("100%",), soak_s=0, max_installing_per_site=1), devices(1, 6))
    fleet.run(T0 + 200_000)
    before = len(fleet.installs)
    updated = {d for d, r in fleet.engine.devices.items() if r.state == DeviceState.SUCCEEDED}
    assert updated and before < 6
    effects = fleet.engine.handle(Control("abort", revert=True), fleet.now_ms)
    assert {e.device_id for e in effects if isinstance(e, Revert)} == updated
    assert isinstance(effects[0], Persist)  # persisted before acting
    fleet.run(T0 + 3_600_000)
    assert len(fleet.installs) == before
    assert fleet.engine.state == RolloutState.ABORTED


def test_pause_and_resume_and_illegal_controls():
    fleet = started(plan(canary=1, waves=("100%",)), devices(1, 4))
    fleet.feed(Control("pause"))
    n = len(fleet.installs)
    fleet.run(T0 + 600_000)
    assert len(fleet.installs) == n and fleet.engine.state == RolloutState.PAUSED
    with pytest.raises(RolloutError, match="cannot pause a rollout that is paused"):
        fleet.engine.handle(Control("pause"), fleet.now_ms)
    fleet.feed(Control("resume"))
    fleet.run(T0 + 3_600_000)
    assert fleet.engine.state == RolloutState.COMPLETED


def test_scheduled_start_waits_for_its_time():
    eng = RolloutEngine("r1", plan())
    eng.target(devices(1, 3))
    fleet = FakeFleet(eng, T0)
    fleet.feed(Control("start", at_ms=T0 + 60_000))
    assert eng.state == RolloutState.SCHEDULED
    fleet.run(T0 + 59_000)
    assert not fleet.installs
    fleet.run(T0 + 61_000)
    assert eng.state == RolloutState.RUNNING and fleet.installs


def test_restore_from_what_was_persisted_carries_on():
    fleet = started(plan(canary=2, waves=("100%",)), devices(1, 6))
    fleet.run(T0 + 30_000)
    header = fleet.persisted[-1].rollout
    rows: dict[str, dict] = {}
    for p in fleet.persisted:
        rows.update({d["device_id"]: d for d in p.devices})
    again = RolloutEngine.restore(fleet.engine.plan, header, list(rows.values()))
    assert again.state == fleet.engine.state and again.stage == fleet.engine.stage
    assert {d: r.state for d, r in again.devices.items()} == {d: r.state for d, r in fleet.engine.devices.items()}


def test_a_device_another_rollout_holds_is_skipped_with_the_holder_named():
    # which rollout holds a device is the cloud's rule (tests/cloud/rollouts/test_conflicts.py)
    eng = RolloutEngine("r2", plan())
    eng.target(devices(1, 2), held={"d-1-000": "r1"})
    assert eng.devices["d-1-000"].state == DeviceState.SKIPPED and "held by rollout r1" in eng.devices["d-1-000"].reason


def test_plan_round_trips_through_json_and_bad_plans_name_the_field():
    p = plan(windows={"site-1": (("0 2 * * *", 7200.0),)}, timezones={"site-1": "Europe/Berlin"},
             failure=Threshold.parse("10%", "f"))
    assert RolloutPlan.from_dict(p.to_dict()) == p
    with pytest.raises(RolloutError, match="on_failure"):
        plan(on_failure="explode")
    with pytest.raises(RolloutError, match="neither a count"):
        RolloutPlan.from_dict({**p.to_dict(), "failure": "lots"})
    with pytest.raises(RolloutError, match="time zone"):
        RolloutEngine("r", plan(windows={"*": (("0 2 * * *", 60.0),)}, timezones={"*": "Mars/Olympus"}))


def test_resume_after_a_halt_accepts_the_failures_seen_and_halts_again_on_new_ones():
    devs = devices(1, 10)
    p = plan(canary=2, waves=("100%",), failure=Threshold(count=1), success=Threshold(percent=50), soak_s=0)
    probe = RolloutEngine("r1", p)
    probe.target(devs)
    canary = sorted(d for d, r in probe.devices.items() if r.stage == 0)
    wave = sorted(d for d, r in probe.devices.items() if r.stage == 1)
    fleet = started(p, devs, bad={canary[0], wave[-1]}, install_ms=5_000)
    fleet.run(T0 + 60_000)
    assert fleet.engine.state == RolloutState.PAUSED
    fleet.feed(Control("resume"))
    fleet.run(T0 + 3_600_000)
    eng = fleet.engine
    assert eng.state == RolloutState.PAUSED and "1 of" in eng.reason  # the new failure, not the accepted one
    assert eng.devices[wave[-1]].state == DeviceState.ROLLED_BACK
    assert sum(1 for r in eng.devices.values() if r.state == DeviceState.SUCCEEDED) >= 5


def test_a_late_refusal_is_not_a_failure_and_the_device_installs_in_its_next_window():
    # one window a day at 12:00 for an hour; T0 is 12:00
    p = plan(canary=1, waves=("100%",), soak_s=0, windows={"*": (("0 12 * * *", 3600.0),)}, timezones={"*": "UTC"},
             failure=Threshold(count=1), min_sample=1, timeout_s=7200)
    eng = RolloutEngine("r1", p)
    eng.target(devices(1, 1))
    first = [e for e in eng.handle(Control("start"), T0) if isinstance(e, Install)]
    assert [(e.device_id, e.download_only) for e in first] == [("d-1-000", False)]
    assert first[0].not_after_ms == T0 + 3_600_000  # the window's close
    # the device had the release only at 13:30: it did not begin, and says so
    late_ms = T0 + 5_400_000
    out = eng.handle(DeviceReport("d-1-000", DeviceEvent.LATE, "its maintenance window is closed"), late_ms)
    rec = eng.devices["d-1-000"]
    assert rec.state == DeviceState.DOWNLOADED and rec.attempts == 0 and rec.deadline_ms == 0
    assert eng.counters["late_installs_refused"] == 1 and eng.failures() == (0, 0)
    assert eng.state == RolloutState.RUNNING  # a failure threshold of one failure was not reached
    assert not [e for e in out if isinstance(e, Install)]  # the window is closed: nothing now
    assert not [e for e in eng.handle(Tick(), T0 + 86_400_000 - 1000) if isinstance(e, Install)]
    again = [e for e in eng.handle(Tick(), T0 + 86_400_000) if isinstance(e, Install)]  # the next day's window
    assert [(e.device_id, e.download_only, e.not_after_ms) for e in again] == [("d-1-000", False, T0 + 90_000_000)]
    assert eng.devices["d-1-000"].attempts == 1


def test_a_late_refusal_after_the_timeout_still_brings_the_device_back_to_downloaded():
    p = plan(canary=1, waves=("100%",), max_retries=0, timeout_s=60)
    eng = RolloutEngine("r1", p)
    eng.target(devices(1, 1))
    eng.handle(Control("start"), T0)
    eng.handle(Tick(), T0 + 61_000)
    rec = eng.devices["d-1-000"]
    assert rec.state == DeviceState.TIMED_OUT and rec.exhausted
    eng.handle(DeviceReport("d-1-000", DeviceEvent.LATE), T0 + 62_000)
    assert rec.state in (DeviceState.DOWNLOADED, DeviceState.INSTALLING) and not rec.exhausted

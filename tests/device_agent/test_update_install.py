"""Install, trial and outcome through UpdateCore + UpdateDriver on the simulated bootloader."""

import hashlib
import sys
import threading

import pytest

from common.errors import UpdateError, UpdateRefused
from device_agent.update import (
    HealthResult,
    LocalManifest,
    ManifestRejected,
    RecordStore,
    SimBootloader,
    StartUpdate,
    State,
    UpdateCore,
    UpdateDriver,
    UpdateRecord,
    check_image,
    hook_commands,
    plan_install,
    run_health_checks,
    version_matches,
    write_slot,
)

HW = "board-1"


def image(version, size=40_000):
    head = f"IMG:{version}:".encode()
    return head + (hashlib.sha256(version.encode()).digest() * (size // 32 + 1))[: size - len(head)]


def manifest_for(data, version, **kw):
    return LocalManifest(
        version=version,
        hw=kw.pop("hw", [HW]),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        security_version=kw.pop("security_version", 1),
        chunk_size=4096,
        **kw,
    )


class Crash(BaseException):
    """The new image crashed before its health check finished (a watchdog reset)."""


class SimDevice:
    """A device: SimBootloader, the record store, and an agent booted afresh on every power_on()."""

    def __init__(self, root, *, b_image=None, health=None):
        self.root = root
        self.sim = SimBootloader.create(root, {"A": image("1.0"), "B": b_image}, primary="A", bootlimit=3)
        self.store = RecordStore(root / "update.json")
        self.reports = []
        self.reboots = 0
        self.health = health or {}  # version -> "ok" | "fail" | "hang" | "crash"
        self.drv = None

    def version(self):
        return self.sim.slot_path(self.sim.active_slot()).read_bytes().split(b":")[1].decode()

    def _health(self, version, timeout_s):
        match self.health.get(self.version(), "ok"):
            case "crash":
                raise Crash()
            case "hang":
                return None
            case "fail":
                return HealthResult(False, "hook 'selftest' exited with 1")
        return version_matches(self.version)(version)

    def _reboot(self):
        self.reboots += 1

    def power_on(self):
        self.sim.power_on()
        self.drv = UpdateDriver(
            UpdateCore("dev-1", HW, health_timeout_s=30),
            self.store,
            self.sim,
            {s: self.sim.slot_path(s) for s in "AB"},
            read_version=self.version,
            health=self._health,
            send_report=self.reports.append,
            reboot=self._reboot,
            clock=lambda: 0.0,
        )
        try:
            self.drv.power_on()
        except Crash:
            pass
        return self.drv

    def install(self, data, manifest, *, allow_downgrade=False):
        path = self.root / "fw.img"
        path.write_bytes(data)
        self.drv.start(manifest, str(path), allow_downgrade=allow_downgrade)

    @property
    def state(self):
        return self.store.load().state


@pytest.fixture
def device(tmp_path):
    d = SimDevice(tmp_path / "dev")
    d.power_on()
    return d


def update(device, version="1.1", **kw):
    data = image(version)
    device.install(data, manifest_for(data, version, **kw))
    return data


def test_healthy_update_commits_and_reports(device):
    data = update(device, security_version=4)
    assert device.reboots == 1 and device.state is State.REBOOTING
    assert device.sim.slot_path("B").read_bytes() == data
    device.power_on()  # the trial boot: health passes, slot B is committed
    assert [(r.outcome, r.version, r.running_version) for r in device.reports] == [("committed", "1.1", "1.1")]
    rec = device.store.load()
    assert (rec.state, rec.installed_version, rec.security_floor) == (State.IDLE, "1.1", 4)
    bs = device.sim.boot_state()
    assert (bs.booted, bs.primary, sorted(bs.good)) == ("B", "B", ["A", "B"])
    device.power_on()
    assert device.sim.active_slot() == "B" and len(device.reports) == 1


def test_tampered_image_is_rejected_and_never_installed(tmp_path):
    older = image("0.9")
    device = SimDevice(tmp_path / "dev", b_image=older)
    device.power_on()
    data = image("1.1")
    m = manifest_for(data, "1.1")
    device.install(data[:-1] + bytes([data[-1] ^ 1]), m)
    (report,) = device.reports
    assert report.outcome == "failed" and "sha256" in report.reason and "refusing to install" in report.reason
    assert device.sim.slot_path("B").read_bytes() == older  # not a byte written
    assert "B" in device.sim.boot_state().good  # not even marked bad
    assert device.reboots == 0 and device.state is State.IDLE


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"hw": ["board-2"]}, "built for hardware board-2, this device is 'board-1'"),
        ({"security_version": 2}, "security version 2 is below this device's floor 3"),
    ],
)
def test_manifest_for_other_hardware_or_below_the_floor_is_refused(tmp_path, kw, match):
    device = SimDevice(tmp_path / "dev")
    device.store.save(UpdateRecord(installed_version="1.0", security_floor=3))
    device.power_on()
    update(device, **kw)
    (report,) = device.reports
    assert report.outcome == "failed" and match in report.reason and "'1.1' refused" in report.reason
    assert device.sim.slot_path("B").read_bytes() == b"" and device.reboots == 0


def test_downgrade_needs_an_explicit_allowance(device):
    update(device, "0.9")
    (report,) = device.reports
    assert report.outcome == "failed" and "older than the installed '1.0'" in report.reason
    data = image("0.9")
    device.install(data, manifest_for(data, "0.9"), allow_downgrade=True)
    device.power_on()
    assert [r.outcome for r in device.reports] == ["failed", "committed"]
    assert device.version() == "0.9"


def test_the_allowance_does_not_lower_the_security_floor(tmp_path):
    device = SimDevice(tmp_path / "dev")
    device.store.save(UpdateRecord(installed_version="1.0", security_floor=3))
    device.power_on()
    data = image("0.9")
    device.install(data, manifest_for(data, "0.9", security_version=2), allow_downgrade=True)
    assert device.reports[0].outcome == "failed" and "below this device's floor 3" in device.reports[0].reason


def test_failed_health_check_rolls_back_and_reports_why(device):
    device.health["1.1"] = "fail"
    update(device)
    device.power_on()  # trial: health fails -> mark B bad, reboot
    assert device.reboots == 2 and device.reports == []
    device.power_on()  # back on A: the rollback is reported
    (report,) = device.reports
    assert (report.outcome, report.reason, report.running_version) == (
        "rolled_back",
        "hook 'selftest' exited with 1",
        "1.0",
    )
    assert device.sim.active_slot() == "A" and "B" not in device.sim.boot_state().good


def test_hung_health_check_times_out_and_rolls_back(device):
    device.health["1.1"] = "hang"
    update(device)
    device.power_on()
    device.power_on()
    (report,) = device.reports
    assert report.outcome == "rolled_back" and "did not finish within 30 s" in report.reason


def test_crash_past_the_boot_limit_falls_back_and_is_reported_at_power_on(device):
    device.health["1.1"] = "crash"
    update(device)
    for _ in range(3):  # bootlimit 3: three trial boots, each crashing before health check
        device.power_on()
        assert device.sim.active_slot() == "B" and device.reports == []
    device.power_on()  # the bootloader gives up on B
    (report,) = device.reports
    assert report.outcome == "rolled_back"
    assert "slot B was not confirmed within its boot limit; the bootloader fell back to slot A" == report.reason
    assert device.state is State.IDLE and device.version() == "1.0"


def test_wrong_version_fails_the_health_check(device):
    data = image("1.2")  # the image says 1.2, the manifest says 1.1
    device.install(data, manifest_for(data, "1.1"))
    device.power_on()
    device.power_on()
    (report,) = device.reports
    assert report.outcome == "rolled_back" and "running version '1.2' is not the manifest's '1.1'" in report.reason


def test_report_is_sent_again_until_delivered(device):
    update(device)
    sent = device.reports

    def flaky(report):
        raise UpdateError("outbox full")

    device.sim.power_on()
    device.drv = UpdateDriver(
        UpdateCore("dev-1", HW),
        device.store,
        device.sim,
        {s: device.sim.slot_path(s) for s in "AB"},
        read_version=device.version,
        health=device._health,
        send_report=flaky,
        reboot=device._reboot,
    )
    device.drv.power_on()
    assert device.state is State.COMMITTED and sent == []
    device.power_on()  # the next boot delivers it
    assert [r.outcome for r in sent] == ["committed"] and device.state is State.IDLE


def test_an_update_cannot_start_while_one_is_in_progress(device):
    update(device)
    with pytest.raises(UpdateError, match="update to '1.2' cannot start: the device is rebooting"):
        update(device, "1.2")
    core = device.drv.core
    data = image("1.2")
    with pytest.raises(UpdateError, match="update to '1.2' cannot start: update to '1.1' is rebooting"):
        core.handle(StartUpdate(manifest_for(data, "1.2"), "fw.img"), 0.0)


# -- the pieces --------------------------------------------------------------------------


def test_plan_targets_the_inactive_slot_with_no_io():
    data = image("1.1")
    plan = plan_install(
        manifest_for(data, "1.1"),
        "/nonexistent/fw.img",
        device_hw=HW,
        installed_version="1.0",
        security_floor=0,
        active_slot="B",
    )
    assert (plan.target_slot, plan.source_slot, plan.mode, plan.size) == ("A", "B", "full", len(data))


def test_plan_refusal_is_an_update_refused_naming_the_version():
    data = image("1.1")
    with pytest.raises(UpdateRefused) as info:
        plan_install(
            manifest_for(data, "1.1", hw=["x"]),
            "f",
            device_hw=HW,
            installed_version="1.0",
            security_floor=0,
            active_slot="A",
        )
    assert info.value.version == "1.1" and "hardware x" in info.value.reason


@pytest.mark.parametrize(
    "installed, offered, refused",
    [("1.9", "1.10", False), ("2.1.0", "2.1", False), ("1.0", "1.0-rc.1", True), ("1.10", "1.9.9", True)],
)
def test_downgrades_are_judged_by_the_firmware_version_order(installed, offered, refused):
    data = image(offered)
    kw = dict(device_hw=HW, installed_version=installed, security_floor=0, active_slot="A")
    if refused:
        with pytest.raises(UpdateRefused, match="older than the installed"):
            plan_install(manifest_for(data, offered), "f", **kw)
    else:
        assert plan_install(manifest_for(data, offered), "f", **kw).version == offered


def test_a_version_that_does_not_parse_is_refused():
    data = image("banana")
    with pytest.raises(UpdateRefused, match="does not parse"):
        plan_install(
            manifest_for(data, "banana"), "f", device_hw=HW, installed_version="1.0", security_floor=0, active_slot="A"
        )


def test_a_signed_manifest_from_the_release_tools_installs(device):
    from common.firmware import build_manifest, generate_release_key, key_id, sign_manifest, verify_manifest

    data = image("1.1", 300_000)
    path = device.root / "fw.img"
    path.write_bytes(data)
    key = generate_release_key()
    signed = sign_manifest(
        build_manifest(str(path), "1.1", [HW], security_version=2, expires_ms=10_000, issued_ms=0), key
    )
    trusted = {key_id(key.public_key()): key.public_key()}
    m = verify_manifest(signed, trusted, hw=HW, now_ms=1_000, security_floor=0, current_version="1.0")
    device.drv.start(m, str(path))
    device.power_on()
    assert [(r.outcome, r.running_version) for r in device.reports] == [("committed", "1.1")]
    assert device.store.load().security_floor == 2


def test_a_manifest_that_failed_verification_is_reported_as_failed(device):
    device.drv.feed(ManifestRejected("1.1", "firmware manifest 1.1: expired at 10000 ms (now 20000 ms)"))
    (report,) = device.reports
    assert (report.outcome, report.version) == ("failed", "1.1") and "expired" in report.reason
    assert device.state is State.IDLE and device.reboots == 0


def test_write_slot_reads_back_what_it_wrote(tmp_path):
    data = image("1.1", 100_000)
    (tmp_path / "fw.img").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "slot").write_bytes(b"x" * 200_000)  # longer old content is cut off
    write_slot("B", tmp_path / "slot", tmp_path / "fw.img", size=len(data), sha256=sha, block_size=4096)
    assert (tmp_path / "slot").read_bytes() == data

    def flipping(fd, block):  # a bad flash: one bit flips on the way
        import os

        b = bytearray(block)
        b[0] ^= 1
        return os.write(fd, bytes(b))

    with pytest.raises(UpdateError, match="Failed verifying slot B: it reads back with sha256"):
        write_slot("B", tmp_path / "slot", tmp_path / "fw.img", size=len(data), sha256=sha, write=flipping)


def test_write_slot_notices_an_image_changed_after_verification(tmp_path):
    data = image("1.1")
    (tmp_path / "fw.img").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    check_image(tmp_path / "fw.img", len(data), sha)
    (tmp_path / "fw.img").write_bytes(data[:-1] + b"!")
    with pytest.raises(UpdateError, match="changed while it was written"):
        write_slot("A", tmp_path / "slot", tmp_path / "fw.img", size=len(data), sha256=sha)
    with pytest.raises(UpdateError, match="is 3 bytes, the manifest says"):
        (tmp_path / "fw.img").write_bytes(b"abc")
        check_image(tmp_path / "fw.img", len(data), sha)


def test_hook_commands_run_for_real_with_a_timeout():
    py = sys.executable
    assert hook_commands([[py, "-c", "pass"]], timeout_s=10)("1.1") == HealthResult(True)
    failed = hook_commands(
        [[py, "-c", "pass"], [py, "-c", "import sys; print('disk full'); sys.exit(3)"]], timeout_s=10
    )("1.1")
    assert not failed.ok and "exited with 3: disk full" in failed.reason
    hung = hook_commands([[py, "-c", "import time; time.sleep(30)"]], timeout_s=0.3)("1.1")
    assert not hung.ok and "did not exit within 0.3 s" in hung.reason
    missing = hook_commands([["/nonexistent/hook"]], timeout_s=1)("1.1")
    assert not missing.ok and "could not run" in missing.reason


def test_health_checks_that_hang_give_no_answer():
    release = threading.Event()
    try:
        assert (
            run_health_checks(
                [lambda v: HealthResult(True), lambda v: release.wait(10) and HealthResult(True)], "1.1", timeout_s=0.2
            )
            is None
        )
    finally:
        release.set()
    first_failure = run_health_checks(
        [lambda v: HealthResult(False, "no gateway"), lambda v: 1 / 0], "1.1", timeout_s=5
    )
    assert first_failure == HealthResult(False, "no gateway")
    crashed = run_health_checks([lambda v: 1 / 0], "1.1", timeout_s=5)
    assert not crashed.ok and "ZeroDivisionError" in crashed.reason

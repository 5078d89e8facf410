"""One contract suite run against every Bootloader backend: Sim always, GRUB and U-Boot with the real tools.

Each backend comes with its "firmware": what runs at power-on (SimBootloader.power_on,
RAUC's GRUB script emulated by grub_boot over grub-editenv, RAUC's U-Boot script
emulated by uboot_boot over fw_printenv/fw_setenv). The tests boot, arm, mark and
boot again, and check which slot comes up.
"""

import hashlib
import subprocess

import pytest

from common.errors import BootloaderError
from device_agent.update import (
    Bootloader,
    GrubBootloader,
    HealthResult,
    LocalManifest,
    RecordStore,
    SimBootloader,
    State,
    UBootBootloader,
    UpdateCore,
    UpdateDriver,
)
from device_agent.update.grub import grub_boot
from device_agent.update.uboot import uboot_boot
from tests.real_tools import requires

GRUB = requires("grub-editenv")
UBOOT = requires("fw_printenv", "fw_setenv", "mkenvimage")


class Device:
    """A bootloader plus its power-on behaviour; ``booted`` is what the kernel command line would say."""

    def __init__(self, kind, tmp_path):
        self.kind = kind
        self.root = tmp_path
        self.booted = "A"
        self.slots = {s: tmp_path / f"slot_{s}.img" for s in "AB"}
        if kind == "sim":
            self.bl = SimBootloader.create(tmp_path, {"A": b"v1.0", "B": None}, primary="A", bootlimit=3)
            self.limit = 3
        elif kind == "grub":
            self.bl = GrubBootloader.create(tmp_path / "grubenv", booted=lambda: self.booted)
            self.limit = 1
        else:
            self.bl = UBootBootloader.create(
                tmp_path / "fw_env.config", tmp_path / "uboot.env", attempts=3, booted=lambda: self.booted
            )
            self.limit = 3

    def power_on(self):
        if self.kind == "sim":
            slot = self.bl.power_on()
        elif self.kind == "grub":
            slot = grub_boot(self.bl.path)
        else:
            slot = uboot_boot(self.bl)
        assert slot is not None, "no slot bootable"
        self.booted = slot
        return slot

    def boot_and_confirm(self):
        """A boot of a committed system: the agent marks the running slot good (RAUC's mark-good service)."""
        slot = self.power_on()
        self.bl.mark_good(slot)
        return slot


@pytest.fixture(
    params=[
        "sim",
        pytest.param("grub", marks=GRUB),
        pytest.param("uboot", marks=UBOOT),
    ]
)
def dev(request, tmp_path):
    return Device(request.param, tmp_path)


def test_backend_satisfies_the_port(dev):
    assert isinstance(dev.bl, Bootloader)
    assert dev.boot_and_confirm() == "A"
    state = dev.bl.boot_state()
    assert state.booted == "A" and state.primary == "A" and "A" in state.good and "B" not in state.good


def test_commit_keeps_booting_the_new_slot(dev):
    dev.boot_and_confirm()
    dev.bl.mark_bad("B")  # before writing it
    dev.bl.set_try_once("B")
    assert dev.power_on() == "B"  # the trial boot
    dev.bl.mark_good("B")  # health passed: commit
    for _ in range(dev.limit + 2):
        assert dev.boot_and_confirm() == "B"
    assert "B" in dev.bl.boot_state().good


def test_explicit_rollback_returns_to_the_old_slot(dev):
    dev.boot_and_confirm()
    dev.bl.mark_bad("B")
    dev.bl.set_try_once("B")
    assert dev.power_on() == "B"
    dev.bl.mark_bad("B")  # health failed: roll back
    for _ in range(dev.limit + 2):
        assert dev.boot_and_confirm() == "A"
    assert "B" not in dev.bl.boot_state().good


def test_bootloader_falls_back_when_the_trial_slot_is_never_confirmed(dev):
    dev.boot_and_confirm()
    dev.bl.mark_bad("B")
    dev.bl.set_try_once("B")
    booted = [dev.power_on() for _ in range(dev.limit + 1)]  # the new slot hangs or crashes every boot
    assert booted == ["B"] * dev.limit + ["A"]
    dev.bl.mark_good("A")
    assert dev.boot_and_confirm() == "A" and dev.boot_and_confirm() == "A"


def test_marking_an_unknown_slot_names_it(dev):
    with pytest.raises(BootloaderError, match="Failed marking slot C as good"):
        dev.bl.mark_good("C")


def test_sim_state_reports_the_trial_and_its_counter(tmp_path):
    sim = SimBootloader.create(tmp_path, {"A": b"a", "B": b"b"}, primary="A", bootlimit=2)
    sim.power_on()
    sim.set_try_once("B")
    assert sim.power_on() == "B"
    s = sim.boot_state()
    assert (s.booted, s.trial, s.bootcount, s.bootlimit) == ("B", "B", 1, 2)
    sim.mark_good("B")
    s = sim.boot_state()
    assert (s.primary, s.trial, s.bootcount, sorted(s.good)) == ("B", None, 0, ["A", "B"])


def test_sim_with_no_good_slot_is_bricked(tmp_path):
    sim = SimBootloader.create(tmp_path, {"A": b"a", "B": None}, primary="A")
    sim.power_on()
    sim.mark_bad("A")
    with pytest.raises(BootloaderError, match="bricked"):
        sim.power_on()


@GRUB
def test_grub_tool_failure_is_translated_naming_the_slot(tmp_path):
    bl = GrubBootloader(tmp_path / "missing-dir" / "grubenv", booted="A")
    with pytest.raises(BootloaderError, match=r"Failed marking slot B as good: grub-editenv exited with \d+"):
        bl.mark_good("B")


@GRUB
def test_grub_environment_is_the_rauc_scheme(tmp_path):
    bl = GrubBootloader.create(tmp_path / "grubenv", booted="A")
    bl.set_try_once("B")
    out = subprocess.run(
        ["grub-editenv", str(tmp_path / "grubenv"), "list"], capture_output=True, text=True, check=True
    )
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert env == {"ORDER": "B A", "A_OK": "1", "A_TRY": "0", "B_OK": "1", "B_TRY": "0"}


@UBOOT
def test_uboot_environment_is_the_rauc_scheme(tmp_path):
    bl = UBootBootloader.create(tmp_path / "fw_env.config", tmp_path / "uboot.env", booted="A")
    assert (tmp_path / "uboot.env").stat().st_size == 0x4000
    bl.set_try_once("B")
    out = subprocess.run(
        ["fw_printenv", "-c", str(tmp_path / "fw_env.config")], capture_output=True, text=True, check=True
    )
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert env == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}


@UBOOT
def test_uboot_tool_failure_is_translated_naming_the_slot(tmp_path):
    (tmp_path / "fw_env.config").write_text(f"{tmp_path / 'nothing.env'} 0x0000 0x4000\n")
    bl = UBootBootloader(tmp_path / "fw_env.config", booted="A")
    with pytest.raises(BootloaderError, match=r"Failed marking slot A as bad: fw_setenv exited with \d+"):
        bl.mark_bad("A")


# -- the whole update flow, on each backend ------------------------------------------------


class Crash(BaseException):
    """The new image crashes before its health check (a watchdog reset)."""


def power_cycle(dev, reports, health="ok"):
    """Boot the device and run the agent's update driver from the persisted record."""
    if not dev.slots["A"].exists():
        dev.slots["A"].write_bytes(b"v1.0")
    dev.power_on()

    def version():
        return dev.slots[dev.booted].read_bytes().decode()

    def check(expected, timeout_s):
        if version() != "v1.0" and health == "crash":
            raise Crash()
        if version() != "v1.0" and health == "fail":
            return HealthResult(False, "hook 'selftest' exited with 1")
        return HealthResult(version() == f"v{expected}", f"running {version()}")

    drv = UpdateDriver(
        UpdateCore("dev-1", "board-1"),
        RecordStore(dev.root / "update.json"),
        dev.bl,
        dev.slots,
        read_version=version,
        health=check,
        send_report=reports.append,
        reboot=lambda: None,
    )
    try:
        drv.power_on()
    except Crash:
        pass
    return drv


def start(drv, dev):
    (dev.root / "fw.img").write_bytes(b"v1.1")
    m = LocalManifest(version="1.1", hw=["board-1"], size=4, sha256=hashlib.sha256(b"v1.1").hexdigest())
    drv.start(m, str(dev.root / "fw.img"))
    assert drv.halted  # installed, armed, reboot requested


def test_update_commits_through_the_backend(dev):
    reports = []
    start(power_cycle(dev, reports), dev)
    power_cycle(dev, reports)
    assert [r.outcome for r in reports] == ["committed"] and dev.booted == "B"
    for _ in range(dev.limit + 1):
        power_cycle(dev, reports)
        assert dev.booted == "B"
    assert len(reports) == 1 and RecordStore(dev.root / "update.json").load().state is State.IDLE


def test_failed_health_check_rolls_back_through_the_backend(dev):
    reports = []
    start(power_cycle(dev, reports, "fail"), dev)
    power_cycle(dev, reports, "fail")  # trial boot on B: health fails, B marked bad, reboot
    assert dev.booted == "B" and reports == []
    power_cycle(dev, reports, "fail")
    assert dev.booted == "A"
    assert [(r.outcome, r.reason) for r in reports] == [("rolled_back", "hook 'selftest' exited with 1")]
    for _ in range(dev.limit + 1):
        power_cycle(dev, reports, "fail")
        assert dev.booted == "A"
    assert "B" not in dev.bl.boot_state().good


def test_crashing_image_is_rolled_back_by_the_bootloader_and_reported(dev):
    reports = []
    start(power_cycle(dev, reports, "crash"), dev)
    for _ in range(dev.limit):
        power_cycle(dev, reports, "crash")
        assert dev.booted == "B" and reports == []
    power_cycle(dev, reports, "crash")
    assert dev.booted == "A"
    assert [r.outcome for r in reports] == ["rolled_back"] and "fell back to slot A" in reports[0].reason


@GRUB
def test_a_power_cut_before_mark_good_on_grub_returns_to_the_committed_slot(tmp_path):
    """GRUB gives a slot one try a boot: a cut between GRUB's boot of the committed slot and the agent's mark-good
    falls back to the old slot once; the agent there confirms the committed slot again, so the next boot is
    back on the committed image (without it the device would stay on the old image for good, silently)."""
    dev = Device("grub", tmp_path)
    reports = []
    start(power_cycle(dev, reports), dev)
    power_cycle(dev, reports)
    assert [r.outcome for r in reports] == ["committed"] and dev.booted == "B"
    dev.power_on()  # GRUB sets B_TRY=1; the power is cut before the agent runs
    assert dev.booted == "B"
    power_cycle(dev, reports)
    assert dev.booted == "A"  # B was tried and not confirmed: GRUB fell back
    for _ in range(2):
        power_cycle(dev, reports)
        assert dev.booted == "B"
    assert len(reports) == 1 and RecordStore(dev.root / "update.json").load().installed_version.endswith("1.1")

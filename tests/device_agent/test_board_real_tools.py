"""The agent's updater on a board in a directory with the real tools: ext2 rootfs images written raw into
file-backed slots, a real grubenv (grub-editenv) or U-Boot environment (fw_printenv/fw_setenv), the reboot
command, then the machine boots the slot the real environment selects and the agent starts again."""

import time

import pytest
import zstandard

from common.firmware.keys import generate_release_key, public_key_pem
from common.firmware.manifest import build_manifest, sign_manifest
from device_agent.board.boards import RealBoard
from device_agent.updater import AgentUpdater
from simulations.board_dir import DirBoard, make_rootfs
from tests.real_tools import missing, requires

HW = "x86-box"
DAY = 86_400_000
pytestmark = [pytest.mark.integration, requires("grub-editenv", "fw_printenv", "fw_setenv", "mkenvimage", "mke2fs",
                                                "debugfs")]


def now_ms():
    return int(time.time() * 1000)


@pytest.fixture
def key(tmp_path):
    k = generate_release_key()
    (tmp_path / "release.pub").write_bytes(public_key_pem(k.public_key()))
    return k


def release(tmp_path, key, version, health="ok", *, zstd=False):
    image = make_rootfs(tmp_path / f"{version}-{health}.img", version, health)
    m = build_manifest(str(image), version, [HW], security_version=1, expires_ms=now_ms() + DAY, issued_ms=now_ms())
    signed = tmp_path / f"{version}-{health}.manifest"
    signed.write_bytes(sign_manifest(m, key).to_bytes())
    if zstd:
        packed = image.with_suffix(".img.zst")
        packed.write_bytes(zstandard.ZstdCompressor().compress(image.read_bytes()))
        return str(signed), str(packed)
    return str(signed), str(image)


class Device:
    """The agent's updater on the board; ``restart()`` is a new agent process after the machine booted."""

    def __init__(self, tmp_path, board, link=True, **profile):
        self.tmp, self.board, self.link, self.profile = tmp_path, board, link, profile
        self.reports, self.reboots = [], 0
        self.updater = self._updater()

    def _updater(self):
        def rebooting():
            self.reboots += 1

        profile = self.board.profile(**self.profile)
        return AgentUpdater(self.tmp / "agent", "dev-1", HW, [str(self.tmp / "release.pub")],
                            on_report=self.reports.append, link_up=lambda: self.link, now_ms=now_ms,
                            board=RealBoard(profile, link_up=lambda: self.link), on_reboot=rebooting)

    def reboot_and_start(self):
        assert self.board.reboot_flag.exists(), "the agent asked for a reboot without running the reboot command"
        slot = self.board.power_on()
        self.updater = self._updater()
        self.updater.boot()
        return slot


@pytest.fixture(params=["grub", "grub-emu", "uboot"])
def board(request, tmp_path):
    if request.param == "grub-emu" and missing("grub-emu"):  # GRUB's script run by the real GRUB
        pytest.skip(missing("grub-emu"))
    return DirBoard.create(tmp_path / "board", request.param, make_rootfs(tmp_path / "factory.img", "1.0.0"))


def test_a_good_release_reboots_into_its_slot_passes_its_checks_and_commits(tmp_path, key, board):
    dev = Device(tmp_path, board)
    assert dev.updater.start(*release(tmp_path, key, "2.0.0")) == "update to 2.0.0 started"
    assert dev.reboots == 1 and dev.reports == []  # the record is durable, the board reboots
    assert dev.reboot_and_start() == "B"
    assert [(r["outcome"], r["running_version"]) for r in dev.reports] == [("committed", "2.0.0")]
    for _ in range(2):  # committed: the board keeps booting B (the agent re-marks it good on every start)
        board.reboot_flag.touch()
        assert dev.reboot_and_start() == "B"
    assert board.running_version() == "2.0.0" and dev.reboots == 1


def test_a_release_whose_self_test_fails_rolls_back_to_the_old_slot(tmp_path, key, board):
    dev = Device(tmp_path, board)
    dev.updater.start(*release(tmp_path, key, "2.0.0", "fail"))
    assert dev.reboot_and_start() == "B"  # the trial boot
    assert dev.reports == [] and dev.reboots == 2  # health check failed: B marked bad, rebooting
    assert dev.reboot_and_start() == "A"
    (r,) = dev.reports
    assert r["outcome"] == "rolled_back" and "selftest" in r["reason"] and r["running_version"] == "1.0.0"
    board.reboot_flag.touch()
    assert dev.reboot_and_start() == "A" and board.running_version() == "1.0.0"


def test_a_release_that_never_comes_up_is_abandoned_by_the_bootloader_and_reported(tmp_path, key, board):
    dev = Device(tmp_path, board)
    dev.updater.start(*release(tmp_path, key, "2.0.0", "crash"))
    assert dev.reboot_and_start() == "A"  # B never came up: the watchdog reset it until the bootloader gave up
    (r,) = dev.reports
    assert r["outcome"] == "rolled_back" and "fell back to slot A" in r["reason"] and r["running_version"] == "1.0.0"


def test_a_zstd_compressed_image_streams_into_the_slot_as_its_raw_content(tmp_path, key, board):
    dev = Device(tmp_path, board)
    manifest, packed = release(tmp_path, key, "2.0.0", zstd=True)
    assert packed.endswith(".zst")
    dev.updater.start(manifest, packed)
    assert dev.reboot_and_start() == "B"
    assert dev.reports[-1]["outcome"] == "committed"
    raw = (tmp_path / "2.0.0-ok.img").read_bytes()
    assert board.slot_path("B").read_bytes() == raw


def test_no_gateway_on_the_trial_boot_rolls_back(tmp_path, key, board):
    dev = Device(tmp_path, board, link=False, gateway_within_s=0.5)
    dev.updater.start(*release(tmp_path, key, "2.0.0"))
    dev.reboot_and_start()
    dev.reboot_and_start()
    assert dev.reports[-1]["outcome"] == "rolled_back" and "gateway" in dev.reports[-1]["reason"]
    assert board.running_version() == "1.0.0"


def test_a_return_to_the_previous_release_finds_it_by_its_content_and_installs_it_as_an_update(tmp_path, key, board):
    """No header in an image: the other slot's release is found by hashing it against the kept manifests."""
    dev = Device(tmp_path, board)
    assert dev.updater.revert().startswith("refused")  # the other slot is empty: nothing to return to
    dev.updater.start(*release(tmp_path, key, "2.0.0"))
    dev.reboot_and_start()
    assert dev.updater.revert().startswith("refused")  # the factory image: no kept manifest
    dev.updater.start(*release(tmp_path, key, "2.1.0"))
    assert dev.reboot_and_start() == "A" and dev.reports[-1]["running_version"] == "2.1.0"
    assert dev.updater.revert() == "return to 2.0.0 started"
    assert dev.reboot_and_start() == "B"
    assert [r["outcome"] for r in dev.reports] == ["committed"] * 3 and board.running_version() == "2.0.0"


def test_a_delta_applies_against_the_running_release_on_a_slot_larger_than_its_image(tmp_path, key, board):
    """A real slot is a partition: the running image is its first bytes, as many as the kept manifest says."""
    from common.delta import make_delta

    dev = Device(tmp_path, board)
    dev.updater.start(*release(tmp_path, key, "2.0.0"))
    dev.reboot_and_start()
    with open(board.slot_path("B"), "ab") as slot:  # the partition goes on past the image
        slot.write(b"\0" * 65536)
    old = tmp_path / "2.0.0-ok.img"
    new = make_rootfs(tmp_path / "2.1.0.img", "2.1.0")
    m = build_manifest(str(new), "2.1.0", [HW], security_version=1, expires_ms=now_ms() + DAY, issued_ms=now_ms())
    signed = tmp_path / "2.1.0.manifest"
    signed.write_bytes(sign_manifest(m, key).to_bytes())
    patch = tmp_path / "2.1.0.delta"
    make_delta(str(old), str(new), str(patch), isolate=False)
    assert dev.updater.start(str(signed), delta_path=str(patch)) == "update to 2.1.0 started"
    assert dev.reboot_and_start() == "A" and dev.reports[-1]["outcome"] == "committed"
    assert board.slot_path("A").read_bytes() == new.read_bytes()


def test_the_reboot_command_of_the_cloud_runs_the_boards_reboot_command_and_stops_the_agent(tmp_path, board):
    dev = Device(tmp_path, board)
    assert dev.updater.board.slot_versions() == {"active": "A", "A": "1.0.0"}  # what the inventory reports
    dev.updater.reboot_board()
    assert board.reboot_flag.exists() and dev.reboots == 1

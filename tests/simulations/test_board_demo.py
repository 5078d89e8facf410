"""`edgefleet demo --board`: real agent processes on boards in directories (ext2 rootfs slots, the real boot
environment), a signed release rolled to them, real reboots (the agent runs its reboot command and exits 75, the
machine boots the slot the real environment selects, the agent starts again), commit or roll back."""

import pytest

from simulations.demo import Drills, run_demo
from tests.real_tools import missing

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("board", ["grub"])  # U-Boot's agent flow: tests/device_agent/test_board_real_tools.py
def test_agents_on_real_boot_environments_commit_a_good_release_and_roll_back_a_bad_one(tmp_path, board):
    reason = missing("mke2fs", "debugfs", *(["grub-editenv"] if board == "grub" else ["fw_printenv", "fw_setenv"]))
    if reason:
        pytest.skip(reason)
    out = run_demo(tmp_path / "demo", 1, 2, 4.0, Drills(bad_devices=1, board=board), quiet=True)
    assert (out["updates_committed"], out["updates_rolled_back"], out["updates_unreported"]) == (1, 1, 0), out
    assert out["updates_as_expected"] and out["telemetry_lost"] == 0 and out["telemetry_duplicates_stored"] == 0
    (rollback,) = out["update_rollbacks"]
    assert "selftest" in rollback["reason"] and rollback["running_version"] == "1.0.0"
    assert out["clean_exits"] == out["processes"]
    for device in ("dev-1-001", "dev-1-002"):  # the slot each board runs now, as its real environment says
        booted = (tmp_path / "demo" / "boards" / device / "cmdline").read_text()
        assert ("rauc.slot=A" if device in out["bad_devices"] else "rauc.slot=B") in booted
        version = (tmp_path / "demo" / "boards" / device / "sysroot" / "etc" / "os-release").read_text()
        assert ('"1.0.0"' if device in out["bad_devices"] else '"2.0.0"') in version

"""The systemd units in packaging/systemd: checked by the real `systemd-analyze verify` (no warning allowed),
with the ExecStart pointed at this checkout's edgefleet, and the policies the agent and gateway rely on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.real_tools import requires

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "packaging" / "systemd").glob("*.service"))


def _unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(path.read_text())
    return cp


def test_there_is_a_unit_for_the_agent_and_the_gateway():
    assert [u.name for u in UNITS] == ["edgefleet-agent.service", "edgefleet-gateway.service"]


@requires("systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_passes_without_a_warning(tmp_path, unit):
    edgefleet = shutil.which("edgefleet", path=str(Path(sys.executable).parent)) or shutil.which("edgefleet")
    assert edgefleet, "the edgefleet script is not installed next to this Python"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/edgefleet", edgefleet))
    done = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr
    broken = tmp_path / "broken" / unit.name  # the check is live: a typo in a key is reported
    broken.parent.mkdir()
    broken.write_text(copy.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    done = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "NoNewPrivilege" in done.stdout + done.stderr


def test_the_agent_restarts_after_a_reboot_exit_and_keeps_its_state():
    from device_agent.cli import REBOOT_EXIT

    svc = _unit(ROOT / "packaging" / "systemd" / "edgefleet-agent.service")["Service"]
    assert svc["Restart"] in ("always", "on-failure") and REBOOT_EXIT != 0  # 75 is a failure to systemd: restarted
    assert svc["StateDirectory"] == "edgefleet-agent" and "--data-dir /var/lib/edgefleet-agent" in svc["ExecStart"]
    assert svc["NoNewPrivileges"] == "yes" and svc["ProtectSystem"] == "full" and "/boot" in svc["ReadWritePaths"]
    assert "PrivateDevices" not in svc  # the slots are block devices


def test_the_gateway_runs_sandboxed_as_a_dynamic_user():
    svc = _unit(ROOT / "packaging" / "systemd" / "edgefleet-gateway.service")["Service"]
    assert svc["DynamicUser"] == "yes" and svc["ProtectSystem"] == "strict" and svc["PrivateDevices"] == "yes"
    assert svc["StateDirectory"] == "edgefleet-gateway" and "--data-dir /var/lib/edgefleet-gateway" in svc["ExecStart"]

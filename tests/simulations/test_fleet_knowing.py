"""Knowing the fleet with real processes on 127.0.0.1: inventory on change, tags and groups in queries,
layered config delivered through the command path and its applied version reported back, lifecycle,
remote diagnostics (ping, logs) and metrics rollups."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from simulations.fleet import ProcFleet
from tests.waits import HANG_GUARD_S, until_true

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path):
    f = ProcFleet(tmp_path / "fleet", sample_interval_s=0.2)
    yield f
    f.kill_all()


def wait_for(predicate, what):
    """Poll the real fleet until ``predicate`` holds, bounded only by the hang guard (tests/waits.py)."""
    return until_true(predicate, what)


def views(fleet, where=None):
    path = "/v1/fleet/devices" + (f"?where={where}" if where else "")
    return {v["device_id"]: v for v in fleet.api(path)["devices"]}


def cli(fleet, *args):
    from common.cli import main

    result = CliRunner().invoke(main, [*args, "--data-dir", str(fleet.dir("cloud"))], catch_exceptions=False)
    return result


def test_inventory_tags_groups_config_lifecycle_and_diagnostics(fleet, tmp_path):
    cloud_cfg = tmp_path / "cloud.toml"
    cloud_cfg.write_text("config_push_s = 1\n")
    fleet.start_cloud(["--config", str(cloud_cfg)])
    fleet.start_gateway("gw-1", "site-1")
    for name in ("dev-0", "dev-1"):
        fleet.start_agent(name, "site-1", "gw-1", ["--hw", "board-x"])

    # 1. inventory arrives once per device (on change, not every sample)
    seen = wait_for(lambda: (v := views(fleet)) and all(d["inventory"] for d in v.values()) and len(v) == 2 and v,
                    what="both inventories")
    inv = seen["dev-0"]["inventory"]
    assert inv["model"] == "board-x" and inv["firmware_version"] and inv["slot.active"] in ("A", "B")
    assert "storage_free_mb" in inv and "net.hostname" in inv
    time.sleep(1.0)
    reports = fleet.api("/v1/updates")  # noqa: F841  (the API is up; inventory records are counted below)
    summary = fleet.api("/v1/telemetry/summary")
    state_rows = [d for d in summary["devices"] if d["stream"] == "state"]
    assert {d["device_id"]: d["count"] for d in state_rows} == {"dev-0": 1, "dev-1": 1}

    # tags and the query language over inventory, tags and groups
    assert cli(fleet, "devices", "tag", "dev-0", "+canary").output.strip() == "dev-0: tags now canary"
    assert set(views(fleet, "tag:canary")) == {"dev-0"}
    assert set(views(fleet, 'model = "board-x" and not tag:canary')) == {"dev-1"}
    made = cli(fleet, "groups", "create", "canaries", "--where", "tag:canary")
    assert "group canaries created (dynamic: tag:canary)" in made.output
    assert set(views(fleet, 'group = "canaries"')) == {"dev-0"}
    bad = cli(fleet, "devices", "list", "--where", "tag:canary and and")
    assert bad.exit_code == 2 and "position" in bad.output

    # 3. layered config: a global locked key, a group override refused, delivered and applied
    out = json.loads(cli(fleet, "config", "set", "global", "ntp.server", '"pool.ntp.org"', "--lock", "--json").output)
    assert set(out["changed"]) == {"dev-0", "dev-1"}
    dry = json.loads(cli(fleet, "config", "set", "group:canaries", "sample_s", "5", "--dry-run", "--json").output)
    assert dry["changed"] == {"dev-0": ["sample_s"]} and dry["queued"] == []
    cli(fleet, "config", "set", "group:canaries", "sample_s", "5")
    refused = json.loads(cli(fleet, "config", "set", "device:dev-0", "ntp.server", '"evil"', "--json").output)
    assert refused["refused"] == [{"key": "ntp.server", "layer": "device:dev-0", "locked_by": "global"}]
    assert refused["changed"] == {}
    explain = json.loads(cli(fleet, "config", "explain", "dev-0", "--json").output)
    rows = {r["key"]: r for r in explain["keys"]}
    assert rows["ntp.server"]["layer"] == "global" and rows["ntp.server"]["locked_by"] == "global"
    assert rows["ntp.server"]["refused"] == ["device:dev-0"]
    assert rows["sample_s"] == rows["sample_s"] | {"value": 5, "layer": "group:canaries"}
    status = wait_for(
        lambda: (s := fleet.api("/v1/config/status")["devices"]) and all(
            d["applied_version"] and not d["drift"] for d in s) and s,
        what="both devices to apply their desired config",
    )
    versions = {d["device_id"]: d["desired_version"] for d in status}
    assert versions["dev-0"] != versions["dev-1"]  # dev-0 has the group's key too
    assert views(fleet)["dev-0"]["inventory"]["config_version"] == versions["dev-0"]

    # 6. remote diagnostics: ping with hop times, a bounded log tail through store-and-forward
    pong = json.loads(cli(fleet, "devices", "ping", "dev-1", "--json").output)
    assert pong["status"] == "done" and pong["detail"].startswith("pong")
    assert set(pong["hops"]) == {"total_ms", "cloud_to_gateway_ms", "gateway_to_device_ms", "device_to_gateway_ms",
                                 "gateway_to_cloud_ms"}
    assert pong["hops"]["total_ms"] >= 0
    logs = json.loads(cli(fleet, "devices", "logs", "dev-1", "--lines", "5", "--json").output)
    assert logs["command"]["status"] == "done" and 1 <= len(logs["lines"]) <= 5
    assert all("dev-1" in line for line in logs["lines"])

    # 2. lifecycle: validated by the table, recorded with who and why
    moved = cli(fleet, "devices", "set-state", "dev-1", "maintenance", "--reason", "battery swap", "--by", "alice")
    assert moved.output.strip() == "dev-1: active -> maintenance by alice (battery swap)"
    refused_move = cli(fleet, "devices", "set-state", "dev-1", "pending", "--reason", "x")
    assert refused_move.exit_code == 2 and "cannot go from maintenance to pending" in refused_move.output
    cli(fleet, "devices", "set-state", "dev-1", "retired", "--reason", "end of life")
    history = fleet.api("/v1/devices/dev-1/history")["history"]
    assert [(h["from_state"], h["to_state"], h["by"]) for h in history] == [
        ("active", "maintenance", "alice"), ("maintenance", "retired", "operator")]
    assert set(views(fleet, 'state = "retired"')) == {"dev-1"}

    # 4. metrics: raw points and their minute rollups, by device and by site
    raw = fleet.api("/v1/metrics?device=dev-0&tier=raw&metric=cpu_percent")
    assert raw["tier"] == "raw" and raw["points"]
    minute = fleet.api("/v1/metrics?site=site-1&tier=minute&metric=cpu_percent")
    assert {p["device_id"] for p in minute["points"]} == {"dev-0", "dev-1"}
    assert all(p["count"] >= 1 and p["min"] <= p["mean"] <= p["max"] for p in minute["points"])

    # 6. reboot: the command is answered, then the agent exits for its service manager to start it again
    queued = cli(fleet, "devices", "reboot", "dev-0")
    assert queued.exit_code == 0 and "reboot of dev-0 queued as command" in queued.output
    assert fleet.wait("dev-0", timeout_s=HANG_GUARD_S) == 75
    done = fleet.api("/v1/devices/dev-0/commands")["commands"][-1]
    assert (done["name"], done["status"], done["detail"]) == ("reboot", "done", "rebooting")

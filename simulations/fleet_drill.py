"""``edgefleet demo --fleet-drill``: knowing the fleet, end to end with real processes.

Each step waits (with a deadline) until the cloud shows its effect:

1. inventory: every device reports its inventory (once: on change, not per sample);
2. tags and groups: the first device of each site is tagged ``canary``; a dynamic group
   ``canaries`` is the query ``tag:canary``;
3. layered config: ``ntp.server`` set and locked globally, ``sample_s`` set on the group, a
   device override of the locked key refused; every device applies its desired config
   (delivered as a ``config`` command, its version reported back in the inventory): no drift;
4. remote diagnostics: ``ping`` (round trip through the gateway, per hop) and ``logs --lines``;
5. lifecycle: one device to maintenance and back, recorded in its history;
6. the last site's uplink is cut and one of its agents stopped: its gateway raises
   ``device_offline`` for it at the site; the agent comes back (resolved at the site); the link
   returns and both events reach the cloud marked raised at the site; while stopped the
   device is listed by ``devices ghosts``;
7. metrics: minute rollups per site.

The result adds ``inventory_reported``, ``config_applied``, ``config_drift``, ``config_refused``,
``pings_ok``, ``ping_round_trip_ms_max``, ``log_lines``, ``lifecycle_transitions``, ``ghosts_found``,
``site_alerts_fired``, ``site_alerts_resolved``, ``metric_rollups`` and ``fleet_drill_ok``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from simulations.drill_steps import bulk_stored, drain_agents, step_waiter
from simulations.fleet import ProcFleet

__all__ = ["SITE_DRILL_RULES", "run_fleet_drill"]

SITE_DRILL_RULES = [{"type": "offline", "name": "device_offline", "after_s": 3}]


def _toml_rules(rules: list[dict[str, Any]]) -> str:
    lines = ["site_alert_rules = ["]
    lines += ["  { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in r.items()) + " }," for r in rules]
    return "\n".join([*lines, "]"]) + "\n"


def run_fleet_drill(root: Path, sites: int, devices_per_site: int, duration: float, quiet: bool = False) -> dict[str, Any]:
    from common.cli import main

    t0 = started = time.monotonic()

    def say(text: str) -> None:
        if not quiet:
            click.echo(f"  t={time.monotonic() - t0:5.1f}s  {text}")

    missed: list[str] = []
    wait = step_waiter(missed, say)
    fleet = ProcFleet(root)
    runner = CliRunner()

    def cli(*args: str) -> Any:
        result = runner.invoke(main, [*args, "--data-dir", str(fleet.dir("cloud")), "--json"])
        if result.exit_code != 0:
            raise click.ClickException(f"`edgefleet {' '.join(args)}` failed: {result.output.strip()}")
        return json.loads(result.output)

    carried: dict[str, int] = {}
    codes: dict[str, int] = {}
    counters: dict[str, Any] = {}
    outage_s = 0.0
    try:
        (root / "cloud.toml").write_text("config_push_s = 1\n")
        (root / "gateway.toml").write_text(_toml_rules(SITE_DRILL_RULES))
        fleet.start_cloud(extra=["--config", str(root / "cloud.toml")])
        cut_gw = f"gw-{sites}"
        gateways = []
        for s in range(1, sites + 1):
            fleet.start_gateway(f"gw-{s}", f"site-{s}", proxy=f"gw-{s}" == cut_gw,
                                extra=["--config", str(root / "gateway.toml")])
            gateways.append(f"gw-{s}")
        agents = [f"dev-{s}-{d:03d}" for s in range(1, sites + 1) for d in range(1, devices_per_site + 1)]
        for name in agents:
            s = int(name.split("-")[1])
            fleet.start_agent(name, f"site-{s}", f"gw-{s}", extra=["--drain", "45"])
        t0 = time.monotonic()

        # 1. inventory
        def inventoried() -> int:
            return sum(1 for v in fleet.api("/v1/fleet/devices")["devices"] if v["inventory"])

        wait(lambda: inventoried() == len(agents), "every device's inventory")
        counters["inventory_reported"] = inventoried()
        say(f"inventory of {counters['inventory_reported']} devices")

        # 2. tags and a dynamic group
        canaries = [f"dev-{s}-001" for s in range(1, sites + 1)]
        for d in canaries:
            cli("devices", "tag", d, "+canary")
        cli("groups", "create", "canaries", "--where", "tag:canary")
        members = next(g for g in cli("groups", "list") if g["name"] == "canaries")["members"]
        say(f"tagged {len(canaries)} canaries; group canaries = {members}")

        # 3. layered config
        cli("config", "set", "global", "ntp.server", '"pool.ntp.org"', "--lock")
        cli("config", "set", "group:canaries", "sample_s", "5")
        refused = cli("config", "set", f"device:{agents[-1]}", "ntp.server", '"rogue"')["refused"]
        counters["config_refused"] = len(refused)

        def config_state() -> list[dict[str, Any]]:
            return cli("config", "status")

        wait(lambda: all(d["applied_version"] and not d["drift"] for d in config_state()),
             "every device to apply its desired config")
        status = config_state()
        counters["config_applied"] = sum(1 for d in status if d["applied_version"] and not d["drift"])
        counters["config_drift"] = sum(1 for d in status if d["drift"])
        say(f"config applied by {counters['config_applied']} devices, drift {counters['config_drift']}")

        # 4. remote diagnostics
        pings = [cli("devices", "ping", d) for d in agents[:3]]
        counters["pings_ok"] = sum(1 for p in pings if p["status"] == "done")
        counters["ping_round_trip_ms_max"] = max((p["hops"]["total_ms"] for p in pings), default=None)
        logs = cli("devices", "logs", agents[0], "--lines", "20")
        counters["log_lines"] = len(logs["lines"])
        say(f"pings answered {counters['pings_ok']}/3 (max {counters['ping_round_trip_ms_max']} ms); "
            f"{counters['log_lines']} log lines from {agents[0]}")

        # 5. lifecycle
        cli("devices", "set-state", agents[1], "maintenance", "--reason", "drill")
        cli("devices", "set-state", agents[1], "active", "--reason", "drill over")
        counters["lifecycle_transitions"] = len(cli("devices", "history", agents[1]))

        # 6. a site alone: its gateway raises device_offline at the site
        victim = f"dev-{sites}-{devices_per_site:03d}"
        proxy = fleet.proxies[cut_gw]
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(3.5)  # the gateway notices the uplink is down (3 heartbeats) before the device goes quiet
        codes |= fleet.stop([victim], timeout_s=60)
        carried[victim] = fleet.agent_stats(victim)["produced"]["bulk"]
        say(f"DRILL: uplink of {cut_gw} cut; {victim} stopped")
        time.sleep(6.0)  # past the site rule's 3 s, and the gateway's liveness
        wait(lambda: victim in {g["device_id"] for g in cli("devices", "ghosts", "--silent-for", "4s")["ghosts"]},
             f"{victim} listed as a ghost")
        counters["ghosts_found"] = len(cli("devices", "ghosts", "--silent-for", "4s")["ghosts"])
        fleet.restart(victim)
        time.sleep(4.0)
        proxy.restore()
        outage_s = time.monotonic() - cut_at
        say(f"DRILL: {victim} started again; uplink of {cut_gw} restored after {outage_s:.1f} s")

        def site_alerts() -> list[dict[str, Any]]:
            rows = fleet.api("/v1/alerts?state=all&limit=10000")["alerts"]
            return [a for a in rows if (a.get("detail") or {}).get("raised_at") == "site"]

        wait(lambda: any(a["subject"] == victim and a["state"] == "resolved" for a in site_alerts()),
             f"the site's device_offline for {victim}, fired and resolved, to reach the cloud")
        raised = site_alerts()
        counters["site_alerts_fired"] = sorted(a["rule"] for a in raised)
        counters["site_alerts_resolved"] = sorted(a["rule"] for a in raised if a["state"] == "resolved")
        say(f"site alerts in the cloud: fired {counters['site_alerts_fired']}, "
            f"resolved {counters['site_alerts_resolved']}")

        # 7. metrics
        counters["metric_rollups"] = len(fleet.api("/v1/metrics?site=site-1&tier=minute&metric=cpu_percent")["points"])

        while time.monotonic() - t0 < duration:
            time.sleep(0.2)
        sampled_s = time.monotonic() - t0
        say("stopping agents (each drains its buffer first)")
        stopped, stats, sent, summary, dropped = drain_agents(fleet, agents, sum(carried.values()))
        codes |= stopped
        codes |= fleet.stop(gateways)
        codes |= fleet.stop(["cloud"])
    finally:
        fleet.kill_all()
    stored = bulk_stored(summary)
    ok = (
        not missed
        and counters.get("inventory_reported") == len(agents)
        and counters.get("config_applied") == len(agents)
        and counters.get("config_drift") == 0
        and counters.get("config_refused") == 1
        and counters.get("pings_ok") == 3
        and counters.get("log_lines", 0) > 0
        and counters.get("lifecycle_transitions") == 2
        and "device_offline" in counters.get("site_alerts_resolved", [])
    )
    return {
        "devices": len(agents),
        "sites": sites,
        "duration_s": round(sampled_s, 1),
        "telemetry_sent": sent,
        "telemetry_stored": stored,
        "telemetry_duplicates_stored": summary["duplicates_stored"],
        "telemetry_dropped_reported": dropped,
        "telemetry_lost": sent - stored - dropped,
        "telemetry_buffered": sum(s["buffered"]["bulk"] for s in stats.values()),
        "gateway_restarts": 0,
        "agent_restarts": 1,
        "outage_seconds": round(outage_s, 1),
        "clean_exits": sum(1 for c in codes.values() if c == 0),
        "processes": len(codes),
        "wall_seconds": round(time.monotonic() - started, 1),
        "logs": str(root / "logs"),
        **counters,
        "fleet_drill_missed": missed,
        "fleet_drill_ok": ok,
    }

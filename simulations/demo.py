"""``edgefleet demo``: a whole fleet as real OS processes on 127.0.0.1, run, stopped cleanly, reported.

1 cloud, ``--sites`` gateways and ``--devices-per-site`` agents each. Agents
sample for ``--duration`` seconds; then they are stopped with SIGTERM (they
drain their buffers), the gateways finish forwarding, everything is stopped,
and the summary is computed from what the agents say they produced and what
the cloud's store holds. Exit status 0 only if nothing was lost or stored twice.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click

from simulations.drill_steps import bulk_stored, drain_agents
from simulations.fleet import ProcFleet
from simulations.teardown import exit_on_signals
from simulations.update_drill import HW, make_release, roll_out, wait_for_outcomes

__all__ = ["demo", "run_demo"]


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text, err=False)


@dataclass(frozen=True, slots=True)
class Drills:
    """Faults the demo injects while the fleet runs."""

    uplink_outage_s: float = 0.0  # cut every gateway's uplink (through a fault proxy) this long
    kill_gateway: int = 0  # SIGKILL a gateway this many times (round robin), restarting it each time
    bad_devices: int | None = None  # roll out a signed release; this many devices get an image that fails
    seed: int = 1
    board: str = "sim"  # grub / uboot: every agent on a board in a directory with that profile (board_fleet)


def _schedule(duration: float, drills: Drills) -> list[tuple[float, str, str]]:
    """(at, action, target) in seconds after the agents start, in time order."""
    rng = random.Random(drills.seed)
    events: list[tuple[float, str, str]] = []
    if drills.uplink_outage_s:
        start = max(2.0, (duration - drills.uplink_outage_s) / 3)
        events += [(start, "cut", "*"), (start + drills.uplink_outage_s, "restore", "*")]
    if drills.bad_devices is not None:
        events.append((min(3.0, duration / 3), "update", ""))
    for i in range(drills.kill_gateway):
        at = duration * (i + 1) / (drills.kill_gateway + 1) + rng.uniform(-1.0, 1.0)
        events.append((max(1.0, at), "kill", str(i)))
    return sorted(events)


def run_demo(
    root: Path, sites: int, devices_per_site: int, duration: float, drills: Drills = Drills(), quiet: bool = False
) -> dict[str, object]:
    fleet = ProcFleet(root)
    proxied = drills.uplink_outage_s > 0
    started = time.monotonic()
    outage_s = 0.0
    restarts = 0
    release = outcomes = None
    bad: set[str] = set()
    agent_flags = ["--drain", "45"]
    boards = None
    if drills.board != "sim":
        from simulations.board_fleet import BoardFleet

        boards = BoardFleet(fleet, root, drills.board)
    if drills.bad_devices is not None:
        release = make_release(root / "release", rootfs=boards is not None)
        agent_flags += ["--release-key", str(release.public_key), "--hw", HW]
    try:
        cloud = fleet.start_cloud()
        _say(quiet, f"cloud     up: gateways on {cloud['gateways']}, API on {cloud['api']}")
        gateways = {}
        for s in range(1, sites + 1):
            name = f"gw-{s}"
            ep = fleet.start_gateway(name, f"site-{s}", proxy=proxied)
            gateways[name] = f"site-{s}"
            via = f" (uplink through a fault proxy at {fleet.proxies[name].endpoint})" if proxied else ""
            _say(quiet, f"{name:<9} up: site-{s}, devices on {ep['devices']}{via}")
        agents = []
        for s, (gname, site) in enumerate(gateways.items(), 1):
            for d in range(1, devices_per_site + 1):
                name = f"dev-{s}-{d:03d}"
                board_flags = boards.lay_out(name) if boards is not None else []
                fleet.start_agent(name, site, gname, extra=agent_flags + board_flags)
                agents.append(name)
        on = f" on {drills.board} boards (ext2 rootfs slots, the real boot environment)" if boards else ""
        _say(quiet, f"{len(agents)} agents started{on}; sampling every {fleet.sample_interval_s} s for {duration:g} s")
        events = _schedule(duration, drills)
        gw_names = list(gateways)
        t0 = time.monotonic()
        cut_at: float | None = None
        next_report = 2.0
        while (now := time.monotonic() - t0) < duration:
            if boards is not None:
                for name in boards.supervise():
                    _say(quiet, f"  t={now:5.1f}s  {name} rebooted by its update: booted slot "
                                f"{boards.boards[name].cmdline.read_text().split('rauc.slot=')[1].split()[0]}")
            while events and events[0][0] <= now:
                _, action, target = events.pop(0)
                if action == "cut":
                    for fp in fleet.proxies.values():
                        fp.cut()
                    cut_at = time.monotonic()
                    _say(quiet, f"  t={now:5.1f}s  DRILL: every site's uplink cut")
                elif action == "update":
                    assert release is not None
                    bad = set(random.Random(drills.seed).sample(agents, min(drills.bad_devices or 0, len(agents))))
                    roll_out(fleet, release, agents, bad)
                    _say(quiet, f"  t={now:5.1f}s  DRILL: release 2.0.0 signed and sent to {len(agents)} devices; "
                                f"{len(bad)} get an image that fails its self-test ({', '.join(sorted(bad)) or 'none'})")
                elif action == "restore":
                    for fp in fleet.proxies.values():
                        fp.restore()
                    outage_s += time.monotonic() - (cut_at or time.monotonic())
                    cut_at = None
                    _say(quiet, f"  t={now:5.1f}s  DRILL: uplinks restored after {outage_s:.1f} s")
                else:
                    gw = gw_names[int(target) % len(gw_names)]
                    fleet.kill(gw)
                    fleet.restart(gw)
                    restarts += 1
                    _say(quiet, f"  t={now:5.1f}s  DRILL: {gw} killed with SIGKILL and restarted")
            if now >= next_report:
                summary = fleet.api("/v1/telemetry/summary")
                devices = len({d["device_id"] for d in summary["devices"]})
                _say(quiet, f"  t={now:5.1f}s  cloud holds {bulk_stored(summary):>7} samples from {devices} devices")
                next_report += 2.0
            time.sleep(0.1)
        if cut_at is not None:  # an outage longer than the run ends with it
            for fp in fleet.proxies.values():
                fp.restore()
            outage_s += time.monotonic() - cut_at
        if release is not None:
            _say(quiet, "waiting for every device to report its update outcome")
            outcomes = wait_for_outcomes(fleet, agents, tick=boards.supervise if boards is not None else None)
            for device in sorted(outcomes):
                o = outcomes[device]
                if o["outcome"] != "committed":
                    _say(quiet, f"  {device}: {o['outcome']} ({o['reason']}), running {o['running_version']}")
        _say(quiet, "stopping agents (each drains its buffer first)")
        # the gateways keep forwarding until the cloud holds everything the agents handed over
        codes, stats, sent, summary, dropped = drain_agents(fleet, agents, boards.carried if boards is not None else 0)
        _say(quiet, f"agents stopped: {sent} samples produced; the cloud holds or accounts for them")
        _say(quiet, "stopping gateways and cloud")
        codes |= fleet.stop(list(gateways))
        codes |= fleet.stop(["cloud"])
    finally:
        fleet.kill_all()
    stored = bulk_stored(summary)
    result = {
        "devices": len(agents),
        "sites": sites,
        "duration_s": duration,
        "telemetry_sent": sent,
        "telemetry_stored": stored,
        "telemetry_duplicates_stored": summary["duplicates_stored"],
        "telemetry_dropped_reported": dropped,
        "telemetry_lost": sent - stored - dropped,
        "telemetry_buffered": sum(s["buffered"]["bulk"] for s in stats.values()),
        "device_reconnects": sum(s["reconnects"] for s in stats.values()),
        "gateway_restarts": restarts,
        "outage_seconds": round(outage_s, 1),
        "clean_exits": sum(1 for c in codes.values() if c == 0),
        "processes": len(codes),
        "wall_seconds": round(time.monotonic() - started, 1),
        "logs": str(root / "logs"),
    }
    if outcomes is not None:
        seen = [o["outcome"] for o in outcomes.values()]
        result |= {
            "updates_committed": seen.count("committed"),
            "updates_rolled_back": seen.count("rolled_back"),
            "updates_failed": seen.count("failed"),
            "updates_unreported": len(agents) - len(outcomes),
            "bad_devices": sorted(bad),
            "update_rollbacks": [{"device": d, "reason": o["reason"], "running_version": o["running_version"]}
                                 for d, o in sorted(outcomes.items()) if o["outcome"] == "rolled_back"],
            "updates_as_expected": all(
                outcomes.get(d, {}).get("outcome") == ("rolled_back" if d in bad else "committed") for d in agents),
        }
    return result


@click.command()
@click.option("--sites", type=int, default=2, show_default=True, help="Gateways, one per site.")
@click.option("--devices-per-site", type=int, default=10, show_default=True)
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds the agents sample.")
@click.option("--uplink-outage", type=float, default=0.0, help="Drill: cut every site's uplink for this many seconds.")
@click.option("--kill-gateway", type=int, default=0, help="Drill: SIGKILL a gateway this many times during the run.")
@click.option("--bad-device", "bad_devices", type=int, default=None,
              help="Drill: roll out a signed release 2.0.0; N devices get an image that fails its self-test and roll back.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds the drill timing.")
@click.option("--board", type=click.Choice(["sim", "grub", "grub-emu", "uboot"]), default="sim", show_default=True,
              help="The agents' board: simulated, or a board in a directory (ext2 rootfs images in file-backed slots) "
                   "driven through the real grub-editenv or fw_setenv, with real reboots; grub-emu: the real GRUB "
                   "runs the boot script at each reboot (docs/UPDATES.md).")
@click.option("--rollout", "rollout_drill", is_flag=True,
              help="Drill: roll a signed release 2.0.0 out through a canary and two waves inside a maintenance window "
                   "(simulations/rollout_drill.py).")
@click.option("--bad-release", is_flag=True, help="With --rollout: the release's image fails its self-test.")
@click.option("--ddi-devices", type=click.IntRange(min=0), default=0,
              help="With --rollout: also N devices running Debian's swupdate (suricatta) that poll their gateway over "
                   "hawkBit's DDI; the release is a signed .swu (docs/DDI.md).")
@click.option("--site-autonomy", is_flag=True,
              help="With --rollout: gateways drive their sites from signed site plans; with --uplink-outage, the site "
                   "with most wave-1 devices is cut off once it holds the wave-1 approval.")
@click.option("--alert-drill", is_flag=True, help="Drill: stop an agent, drain a battery, cut a site's uplink; report the alerts (simulations/alert_drill.py).")
@click.option("--security-drill", is_flag=True, help="Drill: enroll zero-touch, revoke a device, cut its site, forge and replay commands (simulations/security_drill.py).")
@click.option("--fleet-drill", is_flag=True, help="Drill: inventory, tags, groups, layered config, ping, logs, lifecycle, site alerts, metrics (simulations/fleet_drill.py).")
@click.option("--console", "console", is_flag=True,
              help="A small fleet with a rollout in progress for the operator console: prints its address and a login "
                   "token, then runs until Ctrl-C (simulations/console_demo.py).")
@click.option("--console-port", type=int, default=0, show_default=True, help="With --console: the API and console port (0: any free one).")
@click.option("--coordinators", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --rollout: the cloud as N processes over --database (docs/DEPLOY.md).")
@click.option("--database", default="", help="The cloud's database: postgresql://USER@HOST/DB (default: SQLite in its data directory).")
@click.option("--kill-coordinator", type=click.IntRange(min=0), default=0,
              help="With --rollout and --coordinators N: SIGKILL the coordinator holding leadership this many times "
                   "(each restarted); reports coordinator_failovers and max_ingest_pause_s.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep data and logs here (default: a temporary directory, removed after).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def demo(
    sites: int,
    devices_per_site: int,
    duration: float,
    uplink_outage: float,
    kill_gateway: int,
    bad_devices: int | None,
    seed: int,
    board: str,
    alert_drill: bool,
    security_drill: bool,
    rollout_drill: bool,
    bad_release: bool,
    ddi_devices: int,
    site_autonomy: bool,
    fleet_drill: bool,
    console: bool,
    console_port: int,
    coordinators: int,
    database: str,
    kill_coordinator: int,
    workdir: str | None,
    as_json: bool,
) -> None:
    """Start 1 cloud, SITES gateways and SITES x DEVICES-PER-SITE agents as separate processes on 127.0.0.1.

    Telemetry flows device -> gateway -> cloud over CurveZMQ; at the end the
    summary compares what the agents produced with what the cloud stored.
    Exit status 1 if anything was lost or stored twice.
    """
    if (coordinators > 1 or kill_coordinator) and not (rollout_drill and database.startswith("postgresql")):
        raise click.UsageError("--coordinators N and --kill-coordinator run with --rollout and --database postgresql://...")
    exit_on_signals()  # SIGTERM/SIGINT unwind to each drill's finally, which stops every node it started
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    if console:
        from simulations.console_demo import run_console_demo

        try:
            run_console_demo(root, port=console_port, as_json=as_json)
        finally:
            if not workdir:
                shutil.rmtree(root, ignore_errors=True)
        return
    if security_drill:
        from simulations.security_drill import report, run_security_drill

        try:
            secured = run_security_drill(root, sites, devices_per_site, duration)
        finally:
            if not workdir:
                shutil.rmtree(root, ignore_errors=True)
        if not workdir:
            secured["logs"] = "(removed; pass --workdir to keep them)"
        sys.exit(report(secured, as_json))
    try:
        drills = Drills(uplink_outage_s=uplink_outage, kill_gateway=kill_gateway, bad_devices=bad_devices, seed=seed,
                        board=board)
        if rollout_drill:
            from simulations.rollout_drill import run_rollout_drill

            result = run_rollout_drill(root, sites, devices_per_site, bad_release, cut_uplink_s=uplink_outage,
                                       site_autonomy=site_autonomy, ddi_devices=ddi_devices, coordinators=coordinators,
                                       database=database, kill_coordinator=kill_coordinator)
        elif alert_drill:
            from simulations.alert_drill import run_alert_drill

            result = run_alert_drill(root, sites, devices_per_site, duration)
        elif fleet_drill:
            from simulations.fleet_drill import run_fleet_drill

            result = run_fleet_drill(root, sites, devices_per_site, duration)
        else:
            result = run_demo(root, sites, devices_per_site, duration, drills)
    finally:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
    if not workdir:
        result["logs"] = "(removed; pass --workdir to keep them)"
    ok = result["telemetry_lost"] == 0 and result["telemetry_duplicates_stored"] == 0 and result.get("updates_as_expected", True)
    ok = ok and result.get("fleet_drill_ok", True)
    ok = ok and result.get("coordinator_failovers", 0) == result.get("coordinators_killed", 0)
    click.echo("")
    click.echo(f"devices {result['devices']} on {sites} sites, {result['duration_s']:g} s of sampling")
    click.echo(f"telemetry: sent {result['telemetry_sent']}, stored {result['telemetry_stored']}, "
               f"dropped by rule and reported {result['telemetry_dropped_reported']}, "
               f"duplicates stored {result['telemetry_duplicates_stored']}, lost {result['telemetry_lost']}")
    if "updates_committed" in result:
        click.echo(f"updates: {result['updates_committed']} committed, {result['updates_rolled_back']} rolled back "
                   f"(bad image on {', '.join(result['bad_devices']) or 'none'}), {result['updates_failed']} failed, "
                   f"{result['updates_unreported']} unreported")
    if "rollout_state" in result:
        click.echo(f"rollout: {result['rollout_state']} ({result['rollout_reason']}); updated {result['devices_updated']}, "
                   f"rolled back {result['devices_rolled_back']} (canary {result['canary_size']}), "
                   f"outside the canary {result['installs_outside_canary']}, outside the window "
                   f"{result['installs_outside_window']}")
    if result.get("coordinators_killed"):
        click.echo(f"coordinators: {result['coordinators']}, the leader killed {result['coordinators_killed']} times, "
                   f"{result['coordinator_failovers']} failovers (longest takeover {result['max_leader_takeover_s']} s), "
                   f"longest ingest pause {result['max_ingest_pause_s']} s")
    if result["outage_seconds"] or result["gateway_restarts"]:
        click.echo(f"drills: uplink outage {result['outage_seconds']} s, gateway restarts {result['gateway_restarts']}")
    click.echo(f"processes: {result['clean_exits']}/{result['processes']} exited cleanly; {result['wall_seconds']} s in all")
    click.echo("result: OK, nothing lost, nothing stored twice" if ok else "result: FAILED (see the counters above)")
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    sys.exit(0 if ok else 1)

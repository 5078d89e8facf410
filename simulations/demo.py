"""``edgefleet demo``: a whole fleet as real OS processes on 127.0.0.1, run, stopped cleanly, reported.

1 cloud, ``--sites`` gateways and ``--devices-per-site`` agents each. Agents
sample for ``--duration`` seconds; then they are stopped with SIGTERM (they
drain their buffers), the gateways finish forwarding, everything is stopped,
and the summary is computed from what the agents say they produced and what
the cloud's store holds. Exit status 0 only if nothing was lost or stored twice.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click

from simulations.fleet import ProcFleet

__all__ = ["demo", "run_demo"]


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text, err=False)


def run_demo(root: Path, sites: int, devices_per_site: int, duration: float, quiet: bool = False) -> dict[str, object]:
    fleet = ProcFleet(root)
    started = time.monotonic()
    try:
        cloud = fleet.start_cloud()
        _say(quiet, f"cloud     up: gateways on {cloud['gateways']}, API on {cloud['api']}")
        gateways = {}
        for s in range(1, sites + 1):
            name = f"gw-{s}"
            ep = fleet.start_gateway(name, f"site-{s}")
            gateways[name] = f"site-{s}"
            _say(quiet, f"{name:<9} up: site-{s}, devices on {ep['devices']}")
        agents = []
        for s, (gname, site) in enumerate(gateways.items(), 1):
            for d in range(1, devices_per_site + 1):
                name = f"dev-{s}-{d:03d}"
                fleet.start_agent(name, site, gname)
                agents.append(name)
        _say(quiet, f"{len(agents)} agents started; sampling every {fleet.sample_interval_s} s for {duration:g} s")
        t0 = time.monotonic()
        while (left := duration - (time.monotonic() - t0)) > 0:
            time.sleep(min(2.0, left))
            summary = fleet.api("/v1/telemetry/summary")
            devices = len({d["device_id"] for d in summary["devices"]})
            _say(quiet, f"  t={time.monotonic() - t0:5.1f}s  stored {summary['distinct']:>7} records from {devices} devices")
        _say(quiet, "stopping agents (each drains its buffer first)")
        codes = fleet.stop(agents)
        stats = {a: fleet.agent_stats(a) for a in agents}
        sent = sum(s["produced"]["bulk"] for s in stats.values())
        # the gateways keep forwarding until the cloud holds everything the agents handed over
        deadline = time.monotonic() + 60
        while _bulk_stored(summary := fleet.api("/v1/telemetry/summary")) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        _say(quiet, "stopping gateways and cloud")
        codes |= fleet.stop(list(gateways))
        codes |= fleet.stop(["cloud"])
    finally:
        fleet.kill_all()
    stored = _bulk_stored(summary)
    result = {
        "devices": len(agents),
        "sites": sites,
        "duration_s": duration,
        "telemetry_sent": sent,
        "telemetry_stored": stored,
        "telemetry_duplicates_stored": summary["duplicates_stored"],
        "telemetry_lost": sent - stored,
        "telemetry_buffered": sum(s["buffered"]["bulk"] for s in stats.values()),
        "device_reconnects": sum(s["reconnects"] for s in stats.values()),
        "clean_exits": sum(1 for c in codes.values() if c == 0),
        "processes": len(codes),
        "wall_seconds": round(time.monotonic() - started, 1),
        "logs": str(root / "logs"),
    }
    return result


def _bulk_stored(summary: dict) -> int:
    """Telemetry samples (the bulk stream) the cloud holds, each (device, seq) once."""
    return sum(d["count"] for d in summary["devices"] if d["stream"] == "bulk")


@click.command()
@click.option("--sites", type=int, default=2, show_default=True, help="Gateways, one per site.")
@click.option("--devices-per-site", type=int, default=10, show_default=True)
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds the agents sample.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep data and logs here (default: a temporary directory, removed after).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def demo(sites: int, devices_per_site: int, duration: float, workdir: str | None, as_json: bool) -> None:
    """Start 1 cloud, SITES gateways and SITES x DEVICES-PER-SITE agents as separate processes on 127.0.0.1.

    Telemetry flows device -> gateway -> cloud over CurveZMQ; at the end the
    summary compares what the agents produced with what the cloud stored.
    Exit status 1 if anything was lost or stored twice.
    """
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    try:
        result = run_demo(root, sites, devices_per_site, duration, quiet=False)
    finally:
        if not workdir:
            shutil.rmtree(root, ignore_errors=True)
    if not workdir:
        result["logs"] = "(removed; pass --workdir to keep them)"
    ok = result["telemetry_lost"] == 0 and result["telemetry_duplicates_stored"] == 0
    click.echo("")
    click.echo(f"devices {result['devices']} on {sites} sites, {result['duration_s']:g} s of sampling")
    click.echo(f"telemetry: sent {result['telemetry_sent']}, stored {result['telemetry_stored']}, "
               f"duplicates stored {result['telemetry_duplicates_stored']}, lost {result['telemetry_lost']}")
    click.echo(f"processes: {result['clean_exits']}/{result['processes']} exited cleanly; {result['wall_seconds']} s in all")
    click.echo("result: OK, nothing lost, nothing stored twice" if ok else "result: FAILED (see the counters above)")
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    sys.exit(0 if ok else 1)

"""``edgefleet demo --console``: a small fleet with a rollout in progress, for a person to look at in a browser.

It starts ``simulations.console_fleet`` (a cloud with its CA and a signed release, two sites, four agents, a
device waiting to enroll, a site-1 viewer), starts a rollout of the release to every device (a canary of
one, then the rest, soaking ``SOAK_S`` after the canary so it stays in progress), stops one agent so an
offline alert opens, and prints the console's address with a login token for an admin and for the viewer.
Then it keeps running until Ctrl-C (or SIGTERM), and stops every process it started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from simulations.console_fleet import start_console_fleet, wait_for

__all__ = ["SOAK_S", "run_console_demo"]

SOAK_S = 900.0


def run_console_demo(root: Path, *, port: int = 0, as_json: bool = False, hold: bool = True) -> dict[str, Any]:
    """Start it, print how to reach it, then (``hold``) wait for a signal; the caller's ``finally`` is not
    needed: what this starts is stopped here."""
    started = None
    fleet = None
    try:
        cf = start_console_fleet(root, api_port=port)
        started, fleet = time.monotonic(), cf.fleet
        made = cf.api("/v1/rollouts", {"plan": {"release": {"version": cf.release}, "canary": 1, "waves": ["100%"],
                                                "soak_s": SOAK_S, "max_installing_per_site": 2}, "install_args": {}})
        wait_for(lambda: cf.api(f"/v1/rollouts/{made['id']}")["totals"].get("succeeded"), "the canary to update")
        cf.fleet.stop(["dev-2-002"])  # offline from now on: its alert opens a few seconds later
        info = {"console": cf.url + "/", "token": cf.token, "viewer_token": cf.viewer_token, "rollout": made["id"],
                "logs": str(root / "logs")}
        if as_json:
            click.echo(json.dumps(info, sort_keys=True))
        else:
            click.echo("")
            click.echo(f"EdgeFleet console: {info['console']}")
            click.echo(f"  log in as admin with:        {cf.token}")
            click.echo(f"  or as a site-1 viewer with:  {cf.viewer_token}")
            click.echo(f"  rollout {made['id']} of {cf.release} is in progress (canary updated, soaking {SOAK_S:g} s);")
            click.echo("  dev-9-001 waits in the enrollment queue; dev-2-002 was stopped (an offline alert opens)")
            click.echo(f"  logs: {info['logs']}")
            click.echo("Ctrl-C stops every process.")
        while hold:
            time.sleep(3600)  # a signal ends it (simulations.teardown.exit_on_signals)
        return info
    finally:
        if fleet is not None:
            fleet.kill_all()
        else:
            from simulations.fleet import ProcFleet

            ProcFleet(root).kill_all()

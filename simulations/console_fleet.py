"""A small fleet of real processes for the operator console: the browser tests' and ``edgefleet demo --console``'s.

    cf = start_console_fleet(root)     # cloud (CA, release key, quick offline alerts), 2 sites, agents, a pending device
    cf.url, cf.token, cf.viewer_token  # the console's address, the bootstrap token, a site-1 viewer's token
    cf.fleet.kill_all()                # the owner stops it in a ``finally``

What it holds: release ``VERSION`` published (signed with a key made for the run, which the agents trust);
``gw-1`` (site-1) with ``dev-1-001``, ``dev-1-002``; ``gw-2`` (site-2) with ``dev-2-001``, ``dev-2-002``; each
gateway takes enrollments, and ``dev-9-001`` asks to join site-2 by an unknown serial, so it waits in the
enrollment queue; a user ``viewer-a`` (viewer, site-1 only) with an API token; a static group ``canary``
(dev-1-001); devices go offline after ``OFFLINE_S`` of silence (an alert).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from device_agent import simimage
from simulations.delivery import make_key, publish
from simulations.fleet import ProcFleet
from simulations.update_drill import HW, VERSION

__all__ = ["OFFLINE_S", "PENDING", "SITES", "ConsoleFleet", "endpoints_text", "start_console_fleet", "wait_for"]

SITES = {"site-1": ("gw-1", ["dev-1-001", "dev-1-002"]), "site-2": ("gw-2", ["dev-2-001", "dev-2-002"])}
PENDING = ("dev-9-001", "site-2", "gw-2")
OFFLINE_S = 4
T = TypeVar("T")


@dataclass
class ConsoleFleet:
    fleet: ProcFleet
    url: str  # the console (and API) base URL
    token: str  # the bootstrap admin token
    viewer_token: str  # viewer-a: a viewer scoped to site-1
    release: str
    release_key: Path

    @property
    def agents(self) -> list[str]:
        return [d for _, devices in SITES.values() for d in devices]

    def api(self, path: str, body: object | None = None) -> Any:
        return self.fleet.api(path, body)


def wait_for(predicate: Callable[[], T], what: str, timeout_s: float = 180.0, every_s: float = 0.3) -> T:
    """Poll real processes until ``predicate`` is true (the demo's own guard; tests use tests/waits.py)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting for {what} after {timeout_s:g} s")
        time.sleep(every_s)


def start_console_fleet(root: Path, *, api_port: int = 0, sample_interval_s: float = 0.5) -> ConsoleFleet:
    """Start it all and return once every agent reported, the pending device waits and the viewer exists.
    On failure what was started is left to the caller's ``fleet.kill_all()`` (``ConsoleFleet`` is not made)."""
    fleet = ProcFleet(root, sample_interval_s=sample_interval_s)
    key = make_key(root / "release")
    image = root / "release" / f"fw-{VERSION}.img"
    image.write_bytes(simimage.make(VERSION, "ok", 256 * 1024))
    config = root / "cloud.toml"
    config.write_text("alert_rules = [\n"
                      f'  {{type = "offline", name = "device_offline", after_s = {OFFLINE_S}, kind = "device"}},\n'
                      '  {type = "offline", name = "gateway_link_down", after_s = 30, kind = "gateway", severity = "critical"},\n'
                      "]\n")
    fleet.cli("ca", "init", "--dir", str(fleet.dir("ca")), "--json", env={"EDGEFLEET_CA_PASSPHRASE": secrets.token_urlsafe(24)})
    ep = fleet.start_cloud(["--config", str(config), "--ca-dir", str(fleet.dir("ca")), "--release-key", str(key.public),
                            "--release-chunk-kb", "32", *(["--api-port", str(api_port)] if api_port else [])])
    publish(fleet, key, image, VERSION, HW)
    agent_flags = ["--release-key", str(key.public), "--hw", HW, "--drain", "10"]
    for site, (gw, devices) in SITES.items():
        fleet.start_gateway(gw, site, extra=fleet.secure_gateway_flags())
        for name in devices:
            fleet.start_agent(name, site, gw, extra=agent_flags)
    pending, site, gw = PENDING
    fleet.enroll_agent(pending, site, gw, "", extra=agent_flags)
    token = (fleet.dir("cloud") / "api_token").read_text().strip()
    cf = ConsoleFleet(fleet, ep["api"], token, "", VERSION, key.public)
    wait_for(lambda: set(cf.agents) <= {d["device_id"] for d in cf.api("/v1/devices")["devices"]}, "every agent to report")
    wait_for(lambda: any(i["device_id"] == pending and i["status"] == "pending"
                         for i in cf.api("/v1/identities")["identities"]), "the unknown serial to wait as pending")
    cf.api("/v1/users", {"user_id": "viewer-a", "role": "viewer", "sites": ["site-1"]})
    cf.viewer_token = cf.api("/v1/tokens", {"user_id": "viewer-a", "expires_s": 7 * 86400})["token"]
    cf.api("/v1/groups", {"name": "canary", "kind": "static"})
    cf.api("/v1/groups/canary/members", {"add": ["dev-1-001"]})
    return cf


def endpoints_text(cf: ConsoleFleet) -> str:
    return json.dumps({"console": cf.url, "token": cf.token, "viewer_token": cf.viewer_token})

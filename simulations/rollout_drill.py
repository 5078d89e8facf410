"""``edgefleet demo --rollout [--bad-release]``: a staged rollout across a fleet of real processes.

A release is made for the run and published in the cloud with a release key made for it
(``edgefleet release create --key``); the agents trust that key and fetch the release through their
gateway's site cache (one transfer per site). The cloud's rollout service rolls it out through the operator API
(POST /v1/rollouts): a canary of 2, then waves to 50% and 100%, soaking a few seconds per
stage, inside a maintenance window that opens for 45 s of every minute, at most 4
devices installing per site. With ``--bad-release`` the image fails its self-test: the
canary rolls back, the failure threshold (1) pauses the rollout, no wave starts.

The counters are computed from what the devices reported (``/v1/updates``) and the
commands the cloud created, not from the engine's own view:
``devices_updated`` (devices whose latest outcome for the release is committed),
``devices_rolled_back``, ``canary_size``, ``installs_outside_canary`` (devices outside the
canary that were sent the release or reported an outcome for it),
``installs_outside_window`` (update commands created while the window, evaluated afresh,
was closed, or allowed to start after it closed).

With ``--ddi-devices N`` the release is a signed ``.swu`` (update module ``swupdate``, for the agents'
hardware and ``ddi-board``) and N devices running Debian's real ``swupdate`` (suricatta, hawkBit's DDI)
poll their site gateway's DDI endpoint with TargetTokens the cloud issued (``simulations.ddi_devices``);
the same rollout updates agents and DDI devices through the site cache: ``ddi_devices_updated`` counts
the DDI devices whose latest outcome is committed, ``devices_updated`` every device's, ``wan_transfers``
how often a release crossed a site's uplink (the gateways' fetches from the cloud).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from common.shaping import LinkWindows
from device_agent import simimage
from simulations.delivery import make_key, publish
from simulations.drill_steps import bulk_stored, drain_agents
from simulations.fleet import ProcFleet
from simulations.coordinator_drill import Coordinators
from simulations.ddi_devices import SwupdateDevice
from simulations.update_drill import HW, VERSION

__all__ = ["WINDOW", "run_rollout_drill"]

WINDOW = ("* * * * *", 45.0)  # open for the first 45 s of every minute
TIMEZONE = "Europe/Berlin"
FINAL = ("completed", "aborted")


def run_rollout_drill(
    root: Path, sites: int, devices_per_site: int, bad_release: bool, quiet: bool = False, *,
    cut_uplink_s: float = 0.0, window: bool = True, site_autonomy: bool = False, max_installing_per_site: int = 4,
    ddi_devices: int = 0, coordinators: int = 1, database: str = "", kill_coordinator: int = 0,
) -> dict[str, Any]:
    """``cut_uplink_s``: the last site's uplink (through a fault proxy) is cut for this long once wave 1 starts
    (with ``site_autonomy``: once that site's gateway holds the plan approving wave 1);
    ``window``: installs only inside the maintenance window (else any time);
    ``site_autonomy``: gateways drive their sites from the cloud's signed site plans;
    ``coordinators``, ``database``, ``kill_coordinator``: the cloud as N processes over ``database``, the leader
    SIGKILLed that many times during the rollout (``simulations.coordinator_drill``)."""
    def say(text: str) -> None:
        if not quiet:
            click.echo(f"  t={time.monotonic() - t0:5.1f}s  {text}")

    fleet = ProcFleet(root)
    started = t0 = time.monotonic()
    coords = Coordinators(fleet, coordinators, database, kill_coordinator, say)
    key = make_key(root / "release")
    image = root / "release" / f"fw-{VERSION}.img"
    health = "fail" if bad_release else "ok"
    ddi: list[Any] = []
    if ddi_devices:  # one release for both: a .swu whose image a simulated board runs too
        from simulations.ddi_devices import make_signing_cert, make_swu, swupdate_missing

        if why := swupdate_missing():
            raise click.ClickException(f"--ddi-devices: {why}")
        signer = make_signing_cert(root / "release")
        image = make_swu(root / "release" / f"fw-{VERSION}.swu", VERSION, signer,
                         image=simimage.make(VERSION, health, 256 * 1024), broken=bad_release)
    else:
        image.write_bytes(simimage.make(VERSION, health, 256 * 1024))
    try:
        cloud = coords.start(["--release-key", str(key.public), "--release-chunk-kb", "32"])
        if ddi_devices:
            from simulations.ddi_devices import DDI_HW

            publish(fleet, key, image, VERSION, f"{HW},{DDI_HW}", module="swupdate")
        else:
            publish(fleet, key, image, VERSION, HW)  # uploaded, signed with the release key, published
        gateways = []
        cut_gw = ""  # chosen once the rollout is made: the site with the most wave-1 devices
        gw_extra = ["--rollout-key", str(fleet.dir("cloud") / "rollout_signing.pub")] if site_autonomy else []
        if ddi_devices:
            gw_extra += ["--ddi-bind", "127.0.0.1:0", "--ddi-poll", "1"]
        for s in range(1, sites + 1):
            fleet.start_gateway(f"gw-{s}", f"site-{s}", proxy=cut_uplink_s > 0, extra=gw_extra)
            gateways.append(f"gw-{s}")
        agents = [f"dev-{s}-{d:03d}" for s in range(1, sites + 1) for d in range(1, devices_per_site + 1)]
        for name in agents:
            s = int(name.split("-")[1])
            fleet.start_agent(name, f"site-{s}", f"gw-{s}",
                              extra=["--drain", "45", "--release-key", str(key.public), "--hw", HW])
        if ddi_devices:
            ddi = _start_ddi_devices(fleet, root, ddi_devices, sites, signer.cert)
        if not quiet:
            click.echo(f"cloud up ({cloud['api']}), {sites} gateways, {len(agents)} agents, {len(ddi)} SWUpdate devices "
                       f"(DDI); release {VERSION} signed "
                       f"({'an image that fails its self-test' if bad_release else 'a good image'})")
        deadline = time.monotonic() + 60
        every = set(agents) | {d.device_id for d in ddi}
        while not every <= {d["device_id"] for d in fleet.api("/v1/devices")["devices"]}:
            if time.monotonic() > deadline:
                raise TimeoutError("not every device reached the cloud within 60 s; see the logs")
            time.sleep(0.2)
        say("every device has reached the cloud")
        plan = {
            "release": {"version": VERSION, "hardware": [HW], "security_version": 1},
            "canary": 2, "waves": ["50%", "100%"], "soak_s": 3, "success": "100%", "failure": "1",
            "on_failure": "pause", "max_installing_per_site": max_installing_per_site, "max_starts_per_minute": 60,
            "windows": {"*": [list(WINDOW)]} if window else {}, "timezones": {"*": TIMEZONE},
            "timeout_s": 60, "max_retries": 2, "backoff_s": 2, "heartbeat_s": 5, "site_autonomy": site_autonomy,
        }
        # no install args: each device fetches the release by version through its gateway's site cache
        made = fleet.api("/v1/rollouts", {"plan": plan, "install_args": {}}, node=coords.wait_leader())
        rid = made["id"]
        canary = sorted(d["device_id"] for d in made["devices"] if d["stage"] == 0)
        if cut_uplink_s > 0:
            wave1 = [d["site"] for d in made["devices"] if d["stage"] == 1]
            cut_site = max(sorted(set(wave1)), key=wave1.count) if wave1 else f"site-{sites}"
            cut_gw = f"gw-{cut_site.rsplit('-', 1)[1]}"
        say(f"rollout {rid} created: canary {', '.join(canary)}; waves 50%, 100%; window {WINDOW[0]!r} "
            f"for {WINDOW[1]:g} s ({TIMEZONE}); `edgefleet rollout show {rid} --watch --data-dir {fleet.dir('cloud')}`")
        last = ""
        deadline = time.monotonic() + 150
        cut_at = restored_at = None
        outage_s = 0.0
        cut_stage = ""
        behind: set[str] = set()  # the cut site's devices not yet updated, as far as the cloud knew, at the restore
        cut_wall = restored_wall = 0.0
        converged_s: float | None = None
        while time.monotonic() < deadline:
            view = fleet.api(f"/v1/rollouts/{rid}")
            coords.step(view["stage_index"] if view["state"] == "running" else -1)
            if cut_gw and cut_at is None and _wave_1_reached(fleet, cut_gw, view, site_autonomy):
                fleet.proxies[cut_gw].cut()
                cut_at, cut_stage, cut_wall = time.monotonic(), view["stage"], time.time()
                say(f"DRILL: uplink of {cut_gw} cut at {view['stage']}")
            # the cut lasts cut_uplink_s, held (up to 4x) until one of the cut site's devices has committed on
            # its own: on a slow machine the site may not reach an install in the first seconds of the cut
            if (cut_at is not None and restored_at is None and time.monotonic() - cut_at >= cut_uplink_s
                    and (not site_autonomy or time.monotonic() - cut_at >= 4 * cut_uplink_s
                         or _committed_on_disk(fleet, cut_gw, agents))):
                behind = {d["device_id"] for d in fleet.api(f"/v1/rollouts/{rid}")["devices"]
                          if d["site"] == f"site-{cut_gw.rsplit('-', 1)[1]}" and d["state"] != "succeeded"}
                fleet.proxies[cut_gw].restore()
                restored_at, restored_wall = time.monotonic(), time.time()
                outage_s = restored_at - cut_at
                say(f"DRILL: uplink of {cut_gw} restored after {outage_s:.1f} s")
                if site_autonomy:
                    converged_s = _converge(fleet, rid, cut_gw, restored_at)
                    say(f"the cloud's view of {cut_gw}'s devices matched the gateway's {converged_s} s after the restore")
            line = f"{view['state']} at {view['stage']}: " + ", ".join(f"{k} {v}" for k, v in sorted(view["totals"].items()))
            if line != last:
                say(line)
                last = line
            if (view["state"] in FINAL or view["state"] == "paused") and (restored_at is not None or not cut_at):
                break
            for d in ddi:
                d.step()  # a DDI device that installed "reboots", checks itself and confirms
            time.sleep(0.05 if cut_gw and cut_at is None else 0.5)
        coords.wait_done()
        if view["state"] == "paused":  # halted: the canary's other devices finish; nothing more may start
            SwupdateDevice.settle(ddi, time.monotonic() + 3.0)
            # and each canary device reports its outcome (an agent rolling back reboots and checks itself first)
            settle_by = time.monotonic() + 60.0
            while time.monotonic() < settle_by and not set(canary) <= set(_latest_outcomes(fleet, VERSION)):
                SwupdateDevice.settle(ddi, time.monotonic() + 0.5)
            view = fleet.api(f"/v1/rollouts/{rid}")
            say(f"halted: {view['reason']}")
        outcomes = _latest_outcomes(fleet, VERSION)
        # devices of the cut site that committed the release (by their own clock) while their uplink was down
        installed_while_cut = sum(
            1 for u in fleet.api("/v1/updates")["updates"]
            if cut_gw and u["device_id"].startswith(f"dev-{cut_gw.rsplit('-', 1)[1]}-")
            and u["values"].get("outcome") == "committed"
            and cut_wall * 1000 <= u["ts_ms"] <= restored_wall * 1000)
        sent = {d for d in agents if any(c["name"] == "update" for c in fleet.api(f"/v1/devices/{d}/commands")["commands"])}
        if not window:
            outside_window = 0  # no window: nothing is outside one
        elif site_autonomy:
            outside_window = _outside_window_sites(fleet, gateways)
        else:
            outside_window = _outside_window(fleet, agents)
        for d in ddi:
            d.stop()
        say("stopping agents (each drains its buffer first)")
        codes, stats, produced, summary, dropped = drain_agents(fleet, agents)
        codes |= fleet.stop(gateways)
        gw_stats = [json.loads((fleet.dir(g) / "stats.json").read_text()) for g in gateways]
        codes |= fleet.stop(fleet.coordinators)
        coordination = coords.report()
    finally:
        for d in ddi:
            d.stop()
        fleet.kill_all()
        coords.close()
    stored = bulk_stored(summary)
    values = list(outcomes.values())
    every = agents + [d.device_id for d in ddi]
    result: dict[str, Any] = {
        "devices": len(every),
        "ddi_devices": len(ddi),
        "sites": sites,
        "duration_s": round(time.monotonic() - t0, 1),
        "telemetry_sent": produced,
        "telemetry_stored": stored,
        "telemetry_duplicates_stored": summary["duplicates_stored"],
        "telemetry_dropped_reported": dropped,
        "telemetry_lost": produced - stored - dropped,
        "outage_seconds": round(outage_s, 1),
        "uplink_cut_at": cut_stage,
        "cut_site_caught_up": sum(1 for d in behind if outcomes.get(d) == "committed"),
        "installs_while_cut": installed_while_cut,
        "site_autonomy": site_autonomy,
        "converged_after_s": converged_s,
        "gateway_restarts": 0,
        "clean_exits": sum(1 for c in codes.values() if c == 0),
        "processes": len(codes),
        "wall_seconds": round(time.monotonic() - started, 1),
        "logs": str(root / "logs"),
        "rollout_id": rid,
        "rollout_state": view["state"],
        "rollout_reason": view["reason"],
        "rollout_stage": view["stage"],
        "canary_size": len(canary),
        "devices_updated": values.count("committed"),
        "devices_rolled_back": values.count("rolled_back"),
        "devices_failed": values.count("failed"),
        "installs_outside_canary": len((sent | set(outcomes)) - set(canary)),
        "installs_outside_window": outside_window,
        # the release crossed each site's uplink once (the site cache served every device of the site)
        "site_cache_fetches": sum(s.get("firmware_cloud_fetches", 0) for s in gw_stats),
        "gateways_prefetched": sum(1 for s in gw_stats if s.get("firmware_prefetched", 0)),
        "wan_transfers": sum(s.get("firmware_cloud_fetches", 0) for s in gw_stats),
        "ddi_devices_updated": sum(1 for d in ddi if outcomes.get(d.device_id) == "committed"),
        "ddi_devices_failed": sum(1 for d in ddi if outcomes.get(d.device_id) == "failed"),
        "bad_release": bad_release,
        **coordination,
    }
    result["updates_as_expected"] = (
        result["rollout_state"] in ("paused", "aborted") and result["devices_updated"] == 0
        # an agent rolls back a bad release; a DDI device whose install fails reports it failed
        and result["devices_rolled_back"] + result["ddi_devices_failed"] == result["canary_size"]
        and result["installs_outside_canary"] == 0
        if bad_release else
        result["rollout_state"] == "completed" and result["devices_updated"] == len(every)
    ) and outside_window == 0
    if not quiet:
        click.echo(f"rollout {rid}: {view['state']} ({view['reason']}); {result['devices_updated']} updated, "
                   f"{result['devices_rolled_back']} rolled back, canary {len(canary)}, "
                   f"{result['installs_outside_canary']} installs outside the canary, {outside_window} outside the window")
    return result


def _start_ddi_devices(fleet: ProcFleet, root: Path, n: int, sites: int, cert: Path) -> list[Any]:
    """N SWUpdate devices, round robin over the sites: a TargetToken issued by the cloud for each, in force
    at its gateway (on disk there), then ``swupdate -u`` pointed at the gateway's DDI URL."""
    from simulations.ddi_devices import DDI_HW, SwupdateDevice

    out = []
    for i in range(1, n + 1):
        s = (i - 1) % sites + 1
        name, gw = f"ddi-{s}-{i:03d}", f"gw-{s}"
        token = fleet.api("/v1/ddi-tokens", {"device_id": name, "site": f"site-{s}", "hw": DDI_HW})["token"]
        table = fleet.dir(gw) / "ddi_tokens.json"
        deadline = time.monotonic() + 30
        while not (table.exists() and name in json.loads(table.read_text())["devices"]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {gw} did not receive the DDI token of {name} within 30 s")
            time.sleep(0.1)
        dev = SwupdateDevice(root / name, name, fleet.endpoints(gw)["ddi"], token, cert, log=root / "logs" / f"{name}.log")
        dev.start()
        out.append(dev)
    return out


def _wave_1_reached(fleet: ProcFleet, gateway: str, view: dict[str, Any], site_autonomy: bool) -> bool:
    if not site_autonomy:
        return view["stage_index"] >= 1
    import json

    path = fleet.dir(gateway) / "rollouts.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return any(r["plan"]["approved_stage"] >= 1 for r in saved.get("rollouts", {}).values())


def _converge(fleet: ProcFleet, rid: str, gateway: str, since: float, limit_s: float = 15.0) -> float | None:
    """Seconds until the cloud's states of ``gateway``'s devices equal the gateway's own (None: not within the limit)."""
    import json

    while time.monotonic() - since < limit_s:
        saved = json.loads((fleet.dir(gateway) / "rollouts.json").read_text())
        truth = {d["device_id"]: d["state"] for d in saved["rollouts"][rid]["devices"]}
        seen = {d["device_id"]: d["state"] for d in fleet.api(f"/v1/rollouts/{rid}")["devices"] if d["device_id"] in truth}
        if seen == truth:
            return round(time.monotonic() - since, 2)
        time.sleep(0.05)
    return None


def _outside_window_sites(fleet: ProcFleet, gateways: list[str]) -> int:
    """Installs a gateway released (its engine's record of when) while the window, evaluated afresh, was closed.
    The gateway's core delivers a released command only until the window closes (``ReleaseCommands.not_after_ms``)."""
    import json

    windows = LinkWindows([WINDOW], TIMEZONE)
    bad = 0
    for gw in gateways:
        path = fleet.dir(gw) / "rollouts.json"
        if not path.exists():
            continue
        for r in json.loads(path.read_text())["rollouts"].values():
            for d in r["devices"]:
                if d["started_ms"] and not windows.is_open(datetime.fromtimestamp(d["started_ms"] / 1000, UTC)):
                    bad += 1
    return bad


def _committed_on_disk(fleet: ProcFleet, gateway: str, agents: list[str]) -> bool:
    """Has a device behind ``gateway`` committed the drill's release, by its own update record?"""
    prefix = f"dev-{gateway.rsplit('-', 1)[1]}-"
    for d in agents:
        record = fleet.dir(d) / "update.json"
        if d.startswith(prefix) and record.exists():
            try:
                values = json.loads(record.read_text())
            except (OSError, ValueError):  # replaced while read: look again next time
                continue
            if values.get("state") in ("committed", "idle") and values.get("installed_version") == VERSION:
                return True
    return False


def _latest_outcomes(fleet: ProcFleet, version: str) -> dict[str, str]:
    latest: dict[str, str] = {}
    for u in fleet.api("/v1/updates")["updates"]:
        if u["values"].get("version") == version:
            latest[u["device_id"]] = u["values"]["outcome"]
    return latest


def _outside_window(fleet: ProcFleet, agents: list[str]) -> int:
    """Update commands created while the window was closed, or that could start after it closed."""
    windows = LinkWindows([WINDOW], TIMEZONE)
    bad = 0
    for d in agents:
        for c in fleet.api(f"/v1/devices/{d}/commands")["commands"]:
            if c["name"] != "update":
                continue
            at = datetime.fromtimestamp(c["created_ms"] / 1000, UTC)
            closes = windows.closes_at(at)
            if not windows.is_open(at) or closes is None or c["expires_ms"] > closes.timestamp() * 1000 + 1:
                bad += 1
    return bad

"""``edgefleet demo --security-drill``: zero-touch enrollment, a revoked device, a site cut off, and a
compromised gateway that forges and replays commands, all with real processes and real commands.

1. ``edgefleet ca init`` makes the fleet CA; ``edgefleet ca issue`` certifies each gateway's key, id and
   site; the cloud starts with the CA and takes enrollments only from certified gateways;
   ``edgefleet enroll-token create``
   makes one claim token per site; every agent starts in no allowlist and enrolls through its gateway's
   enrollment socket with that token (``enrolled`` counts the certificates the cloud issued).
2. ``edgefleet devices command`` sends a signed ``ping`` to a victim device on site 1 (run once).
3. ``edgefleet devices revoke`` revokes another site-1 device; the drill times how long until site 1's
   gateway holds the new list on disk (``revoke_to_gateway_s``), then cuts site 1's uplink.
4. Site 1's gateway is "compromised": SIGKILLed, and commands are written into its held-command queue as an
   attacker with its disk would: unsigned (9001), signed by the attacker's own key (9003), the captured
   signed ``ping`` replayed as is (seq 1) and under a new number (9002). It restarts, still cut off.
5. The trust boundaries are tried as an attacker would (``simulations.trust_attempts``): an operator of site 1
   reads every read route for site 2's data; admitted gateway keys say Hello as site 2's gateway; a gateway of
   site 1 forwards records for a site-2 device; an anonymous peer claims a device id already pending approval.
6. After the uplink returns and the fleet stops, the counters come from what the processes themselves
   recorded: the victim's ``commands_run``, the gateway's refusals after its restart (cached list, cloud
   unreachable), the cloud's store (records of the revoked device sampled after the list took effect),
   and ``edgefleet audit --json`` (every mutating action of the drill must be there, chain verified).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.command_auth import sign_command
from common.durable_queue import DurableQueue
from common.keyfiles import load_private_key
from common.keys import load_or_create_keypair
from common.protocol import Command, encode
from simulations import trust_attempts as trust
from simulations.fleet import ProcFleet

__all__ = ["report", "run_security_drill"]


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"security drill: timed out after {timeout_s:g} s waiting for {what}")


def _revocation_version(fleet: ProcFleet, gateway: str) -> int:
    path = fleet.dir(gateway) / "revocations.json"
    try:
        return int(json.loads(path.read_bytes())["signed"]["seq"])
    except (OSError, ValueError, KeyError):
        return 0


def _forge(fleet: ProcFleet, gateway: str, victim: str, real: dict[str, Any]) -> dict[str, set[int]]:
    """Write forged and replayed commands into the (stopped) gateway's held-command queue."""
    cloud_key = load_private_key(fleet.dir("cloud") / "signing.key", what="the cloud's signing key")
    # the signed command as it passed through this gateway (signing is deterministic: the same bytes)
    captured = sign_command(victim, real["seq"], real["name"], dict(real["args"] or {}),
                            issued_ms=real["created_ms"], expires_ms=real["expires_ms"], key=cloud_key)
    expires = int(time.time() * 1000) + 3_600_000
    attacker = Ed25519PrivateKey.generate()
    commands = [
        Command(victim, 9001, "echo", {"text": "forged, unsigned"}, expires),
        Command(victim, 9003, "echo", {"text": "forged"}, expires,
                sign_command(victim, 9003, "echo", {"text": "forged"}, issued_ms=expires - 60_000, expires_ms=expires,
                             key=attacker)),
        Command(victim, real["seq"], real["name"], dict(real["args"] or {}), real["expires_ms"], captured),
        Command(victim, 9002, real["name"], dict(real["args"] or {}), real["expires_ms"], captured),
    ]
    queue = DurableQueue(str(fleet.dir(gateway) / "commands"), max_bytes=16 << 20).start()
    try:
        queue.append_many_sync([encode(c) for c in commands])
    finally:
        queue.close()
    return {"forged": {9001, 9003}, "replayed_new_number": {9002}, "replayed": {real["seq"]}}


def run_security_drill(root: Path, sites: int, devices_per_site: int, duration: float, quiet: bool = False) -> dict[str, Any]:
    fleet = ProcFleet(root, sample_interval_s=0.2)
    started = time.monotonic()
    cloud_dir = str(fleet.dir("cloud"))
    ops = ["--data-dir", cloud_dir]
    expected_audit: list[tuple[str, str]] = []
    agents: list[str] = []
    gateways: dict[str, str] = {}
    try:
        fleet.cli("ca", "init", "--dir", str(fleet.dir("ca")), "--json",
                  env={"EDGEFLEET_CA_PASSPHRASE": secrets.token_urlsafe(24)})
        cloud = fleet.start_cloud(["--ca-dir", str(fleet.dir("ca")), "--require-gateway-certs"])
        _say(quiet, f"fleet CA made (root encrypted); cloud up, taking enrollments only from certified gateways: "
                    f"API on {cloud['api']}")
        for s in range(1, sites + 1):
            gw, site = f"gw-{s}", f"site-{s}"
            load_or_create_keypair(fleet.dir(gw))
            cert = str(fleet.dir(gw) / "gateway.pem")
            fleet.cli("ca", "issue", "--dir", str(fleet.dir("ca")), "--role", "gateway", "--id", gw, "--site", site,
                      "--key", str(fleet.dir(gw) / "curve.key"), "--out", cert)
            ep = fleet.start_gateway(gw, site, proxy=True, extra=[*fleet.secure_gateway_flags(), "--cert", cert])
            gateways[gw] = site
            token = json.loads(fleet.cli("enroll-token", "create", "--site", site, "--uses", str(3 * devices_per_site),  # headroom: a reply lost to a timeout costs a use
                                         "--expires", "1h", "--json", *ops).stdout)["token"]
            expected_audit.append(("enroll_tokens.create", site))
            for d in range(1, devices_per_site + 1):
                name = f"dev-{s}-{d:03d}"
                fleet.enroll_agent(name, site, gw, token, extra=["--drain", "10"])
                agents.append(name)
                expected_audit.append(("devices.enroll", name))
            _say(quiet, f"{gw:<6} up: {site}, enrollment on {ep['enroll']}; {devices_per_site} agents enroll with a claim token")

        def enrolled() -> list[dict[str, Any]]:
            return [i for i in fleet.api("/v1/identities")["identities"] if i["status"] == "enrolled"]

        def reporting() -> int:
            return len({d["device_id"] for d in fleet.api("/v1/telemetry/summary")["devices"]})

        # generous: on a loaded machine a gateway's certificate may take many seconds to verify, and devices back off
        _wait(lambda: len(enrolled()) >= len(agents) and reporting() >= len(agents), 240, "every device to enroll and report")
        n_enrolled = len(enrolled())
        _say(quiet, f"{n_enrolled} devices enrolled zero-touch and sending telemetry")
        time.sleep(min(duration, 5.0))

        other_site = "site-2" if sites > 1 else "site-none"
        others = [a for a in agents if a.startswith("dev-2-")] or ["dev-none"]
        reads, cross_site, unanswered = trust.cross_site_reads(fleet, "site-1", other_site, [*others, "gw-2"])
        hellos, impersonations = trust.impersonate_gateway(fleet, "site-1", "gw-2", other_site)
        foreign_sent = trust.forward_foreign_records(fleet, "site-1", others[0])
        pending_key, pending_held = trust.replace_pending(fleet, "gw-1", "site-1")
        _say(quiet, f"trust boundaries tried: {reads} cross-site reads ({cross_site} allowed, {len(unanswered)} unanswered), {hellos} gateway "
                    f"impersonations ({impersonations} accepted), {foreign_sent} records for a {other_site} device "
                    f"from a site-1 gateway, a pending device claimed again by an anonymous key")

        victim, revoked = f"dev-1-{min(2, devices_per_site):03d}", "dev-1-001"
        fleet.cli("devices", "command", victim, "ping", *ops)
        expected_audit.append(("devices.command", f"/v1/devices/{victim}/commands"))
        real = _wait(lambda: [c for c in fleet.api(f"/v1/devices/{victim}/commands")["commands"] if c["status"] == "done"],
                     180, f"the signed ping to run on {victim}")[0]  # sessions churn on a loaded machine
        _say(quiet, f"signed command {real['seq']} ({real['name']}) ran on {victim}")

        before = _revocation_version(fleet, "gw-1")
        t_revoke = time.time()
        fleet.cli("devices", "revoke", revoked, "--reason", "security drill: device compromised", *ops)
        expected_audit.append(("devices.revoke", revoked))
        _wait(lambda: _revocation_version(fleet, "gw-1") > before, 30, "gw-1 to hold the new revocation list")
        t_applied = time.time()
        revoke_s = round(t_applied - t_revoke, 2)
        _say(quiet, f"{revoked} revoked; gw-1 holds the signed list on disk {revoke_s} s later")

        fleet.proxies["gw-1"].cut()
        fleet.kill("gw-1")
        planted = _forge(fleet, "gw-1", victim, real)
        fleet.restart("gw-1")
        _say(quiet, "site-1 uplink cut; gw-1 SIGKILLed, forged and replayed commands planted in its queue, restarted offline")
        time.sleep(max(10.0, duration / 2))  # the victim reconnects and is offered them; the revoked one keeps trying
        fleet.proxies["gw-1"].restore()
        _say(quiet, "site-1 uplink restored")

        codes = fleet.stop(agents, timeout_s=90)
        stats = {a: fleet.agent_stats(a) for a in agents}
        _wait(lambda: reporting() >= len(agents), 30, "the cloud to hear from every device")
        time.sleep(2.0)  # let the gateways forward what the agents drained
        audit = json.loads(fleet.cli("audit", "--json", "--limit", "100000", *ops).stdout)
        codes |= fleet.stop(list(gateways))
        gw_stats = {g: json.loads((fleet.dir(g) / "stats.json").read_text()) for g in gateways}
        codes |= fleet.stop(["cloud"])
    finally:
        fleet.kill_all()

    with sqlite3.connect(fleet.dir("cloud") / "cloud.db") as db:
        (after,) = db.execute("SELECT count(*) FROM telemetry WHERE device_id = ? AND ts_ms > ?",
                              (revoked, int(t_applied * 1000) + 500)).fetchone()
        (foreign_stored,) = db.execute("SELECT count(*) FROM telemetry WHERE device_id = ? AND seq >= ?",
                                       (others[0], trust.FOREIGN_SEQ)).fetchone()
    ran = stats[victim].get("commands_run", [])
    refused = {int(k) for k in stats[victim].get("commands_refused", {})}
    records = audit["records"]
    seen = {(r["action"], r["target"]) for r in records if r["result"] == "allowed"}
    missing = [f"{a} {t}" for a, t in expected_audit if (a, t) not in seen]
    g1 = gw_stats["gw-1"]
    refusals_after_restart = g1.get("auth_refused_revoked", 0) + g1.get("revoked_refused", 0)
    return {
        "devices": len(agents),
        "sites": sites,
        "enrolled": n_enrolled,
        "revoked_device": revoked,
        "revoke_to_gateway_s": revoke_s,
        "revoked_refused": refusals_after_restart > 0 and after == 0,
        "revoked_refusals_after_restart": refusals_after_restart,
        "revoked_accepted_after_revoke": after,
        "forged_commands_accepted": len(planted["forged"] & set(ran)),
        "forged_commands_refused": len(planted["forged"] & refused),
        "replayed_commands_accepted": max(0, ran.count(real["seq"]) - 1) + len(planted["replayed_new_number"] & set(ran)),
        "replayed_commands_refused": len(planted["replayed_new_number"] & refused),
        "cross_site_reads_tried": reads,
        "cross_site_reads_allowed": cross_site,
        "cross_site_reads_unanswered": unanswered,
        "gateway_impersonations_tried": hellos,
        "gateway_impersonations_accepted": impersonations,
        "foreign_device_records_sent": foreign_sent,
        "foreign_device_records_accepted": foreign_stored,
        "pending_identity_replaced": int(pending_held != pending_key),
        "audit_records": len(records),
        "audit_verified": audit["verified"],
        "audit_missing": missing,
        "clean_exits": sum(1 for c in codes.values() if c == 0),
        "processes": len(codes),
        "wall_seconds": round(time.monotonic() - started, 1),
        "logs": str(root / "logs"),
    }


def report(result: dict[str, Any], as_json: bool) -> int:
    ok = (
        result["enrolled"] == result["devices"]
        and result["revoked_refused"]
        and result["revoked_accepted_after_revoke"] == 0
        and result["forged_commands_accepted"] == 0
        and result["replayed_commands_accepted"] == 0
        and result["cross_site_reads_allowed"] == 0
        and result["gateway_impersonations_accepted"] == 0
        and result["foreign_device_records_accepted"] == 0
        and result["pending_identity_replaced"] == 0
        and result["audit_verified"]
        and not result["audit_missing"]
    )
    click.echo("")
    click.echo(f"enrolled {result['enrolled']}/{result['devices']} devices zero-touch on {result['sites']} sites")
    click.echo(f"revocation: {result['revoked_device']} held by its gateway {result['revoke_to_gateway_s']} s after "
               f"`devices revoke`; refused {result['revoked_refusals_after_restart']} times after a restart with the "
               f"uplink cut; records accepted after revocation {result['revoked_accepted_after_revoke']}")
    click.echo(f"commands: forged accepted {result['forged_commands_accepted']} (refused {result['forged_commands_refused']}), "
               f"replayed accepted {result['replayed_commands_accepted']}")
    click.echo(f"boundaries: cross-site reads allowed {result['cross_site_reads_allowed']}/{result['cross_site_reads_tried']}, "
               f"gateway impersonations accepted {result['gateway_impersonations_accepted']}/"
               f"{result['gateway_impersonations_tried']}, foreign device records accepted "
               f"{result['foreign_device_records_accepted']}/{result['foreign_device_records_sent']}, pending identity "
               f"replaced {result['pending_identity_replaced']}")
    click.echo(f"audit: {result['audit_records']} records, chain {'verified' if result['audit_verified'] else 'BROKEN'}, "
               f"missing {result['audit_missing'] or 'none'}")
    click.echo(f"processes: {result['clean_exits']}/{result['processes']} exited cleanly; {result['wall_seconds']} s in all")
    click.echo("result: OK" if ok else "result: FAILED (see the counters above)")
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    return 0 if ok else 1

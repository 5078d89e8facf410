"""Operator commands for knowing the fleet (they talk to the cloud's operator API, like ``cloud.ops_cli``):

    edgefleet devices show ID | tag ID +canary -old | set-state ID STATE --reason R | history ID | ghosts [--silent-for 7d]
    edgefleet devices ping ID | logs ID --lines N | reboot ID
    edgefleet groups list | create NAME [--where Q] | delete NAME | add NAME DEVICE... | remove NAME DEVICE...
    edgefleet config set LAYER KEY VALUE [--lock] [--dry-run] | unset LAYER KEY | explain DEVICE | status | layers
    edgefleet metrics DEVICE [--since 1h] [--metric M] [--tier auto|raw|minute|hour] | metrics --site S

The ``devices`` sub-commands are added to ``cloud.ops_cli.devices`` by ``register``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click

from cloud import ops_cli
from cloud.ops_cli import OperatorError, api_options, format_table, parse_duration

__all__ = ["config", "groups", "metrics", "register"]


def _q(text: str) -> str:
    return quote(text, safe="")


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _echo_json(body: Any) -> None:
    click.echo(json.dumps(body, indent=2))


def _duration(text: str, param: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from exc


# -- devices: tags, lifecycle, ghosts ------------------------------------------------------------


@click.command("tag")
@click.argument("device")
@click.argument("changes", nargs=-1, required=True, metavar="+TAG|-TAG...")
@api_options
def tag_device(fetch: Callable[..., Any], as_json: bool, device: str, changes: tuple[str, ...]) -> None:
    """Add (+TAG) and remove (-TAG) tags of DEVICE, e.g. `edgefleet devices tag d1 +canary -old`."""
    add, remove = [], []
    for change in changes:
        if len(change) < 2 or change[0] not in "+-":
            raise click.BadParameter(f"{change!r}: write +TAG to add or -TAG to remove", param_hint="changes")
        (add if change[0] == "+" else remove).append(change[1:])
    body = fetch(f"/v1/devices/{_q(device)}/tags", "POST", {"add": add, "remove": remove})
    if as_json:
        _echo_json(body)
        return
    click.echo(f"{device}: tags now {', '.join(body['tags']) or '(none)'}")


@click.command("set-state")
@click.argument("device")
@click.argument("state", type=click.Choice(["pending", "active", "maintenance", "quarantined", "retired"]))
@click.option("--reason", required=True, help="Why, for the record (kept in the device's history).")
@click.option("--by", default="operator", show_default=True, help="Who asks for it.")
@api_options
def set_state(fetch: Callable[..., Any], as_json: bool, device: str, state: str, reason: str, by: str) -> None:
    """Move DEVICE to lifecycle STATE; the move is checked against the transition table and recorded.

    maintenance holds back its alerts and rollouts; retired is final (it leaves every group, keeps its
    history, and its credentials are revoked).
    """
    row = fetch(f"/v1/devices/{_q(device)}/state", "POST", {"state": state, "reason": reason, "by": by})
    if as_json:
        _echo_json(row)
        return
    click.echo(f"{device}: {row['from_state']} -> {row['to_state']} by {row['by']} ({row['reason'] or 'no reason'})")


@click.command("history")
@click.argument("device")
@api_options
def history(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """Show DEVICE's lifecycle transitions, oldest first."""
    rows = fetch(f"/v1/devices/{_q(device)}/history")["history"]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"{device}: no lifecycle transitions yet (it is in its first state)")
        return
    click.echo(format_table(["WHEN (UTC)", "FROM", "TO", "BY", "REASON"],
                            [[_when(r["at_ms"]), r["from_state"], r["to_state"], r["by"], r["reason"] or "-"] for r in rows]))


@click.command("ghosts")
@click.option("--silent-for", "silent_for", metavar="DURATION", help="Silent longer than this (default: the cloud's).")
@api_options
def ghosts(fetch: Callable[..., Any], as_json: bool, silent_for: str | None) -> None:
    """List ghost devices: known, not retired, and silent for longer than a configured time."""
    params = {"silent_s": _duration(silent_for, "--silent-for")} if silent_for else None
    body = fetch("/v1/ghosts", params=params)
    if as_json:
        _echo_json(body)
        return
    rows = body["ghosts"]
    if not rows:
        click.echo(f"no ghost devices (none silent for more than {body['silent_s']:g} s)")
        return
    click.echo(format_table(["DEVICE", "SITE", "STATE", "LAST SEEN (UTC)", "SILENT (s)"],
                            [[r["device_id"], r["site_id"], r["state"], _when(r["last_seen_ms"]),
                              round(r["silent_ms"] / 1000)] for r in rows]))


# -- devices: remote diagnostics ------------------------------------------------------------------


def _run_command(fetch: Callable[..., Any], device: str, name: str, args: dict[str, str], wait_s: float) -> dict[str, Any]:
    """Queue a command, then wait until it is final or ``wait_s`` passes; the command's last row."""
    made = fetch(f"/v1/devices/{_q(device)}/commands", "POST", {"name": name, "args": args, "ttl_s": max(1, int(wait_s))})
    deadline = time.monotonic() + wait_s
    while True:
        rows = fetch(f"/v1/devices/{_q(device)}/commands")["commands"]
        row = next(r for r in rows if r["seq"] == made["seq"])
        if row["status"] in ("done", "failed", "expired") or time.monotonic() >= deadline:
            return row
        time.sleep(0.2)


@click.command("ping")
@click.argument("device")
@click.option("--wait", "wait_s", type=click.FloatRange(min=1), default=30, show_default=True, help="Seconds to wait.")
@api_options
def ping(fetch: Callable[..., Any], as_json: bool, device: str, wait_s: float) -> None:
    """Round trip to DEVICE through its gateway, with the time of each hop.

    Each hop stamps its time: the cloud when it queued the command and stored the answer, the
    gateway when it held the command durably and when the device answered, the device when it
    ran it; so cloud -> gateway -> device -> gateway -> cloud is shown leg by leg.
    """
    row = _run_command(fetch, device, "ping", {}, wait_s)
    hops = _hops(row)
    if as_json:
        _echo_json({"device_id": device, "seq": row["seq"], "status": row["status"], "detail": row["detail"], "hops": hops})
        return
    if row["status"] != "done":
        raise OperatorError(f"ping to {device} not answered within {wait_s:g} s: {row['status']} {row['detail']}".strip())
    click.echo(f"pong from {device}: {hops.get('total_ms')} ms round trip")
    for name, ms in hops.items():
        if name != "total_ms":
            click.echo(f"  {name.removesuffix('_ms').replace('_', ' ')}: {ms} ms")


def _hops(row: dict[str, Any]) -> dict[str, int]:
    """Per hop, from the times stamped on the way: the cloud's (created, updated), the gateway's (held,
    done) and the device's. Clocks of different hosts differ; on one site's NTP they agree to a few ms."""
    hops = {"total_ms": row["updated_ms"] - row["created_ms"]}
    stamps: dict[str, int] = {}
    for part in (row.get("detail") or "").split():
        key, _, value = part.partition("=")
        if value.isdigit():
            stamps[key] = int(value)
    legs = [("created", row["created_ms"]), ("gateway_held", stamps.get("gateway_held_ms")),
            ("device", stamps.get("device_ms")), ("gateway_done", stamps.get("gateway_done_ms")),
            ("cloud", row["updated_ms"])]
    names = {("created", "gateway_held"): "cloud_to_gateway_ms", ("gateway_held", "device"): "gateway_to_device_ms",
             ("device", "gateway_done"): "device_to_gateway_ms", ("gateway_done", "cloud"): "gateway_to_cloud_ms",
             ("created", "device"): "cloud_to_device_ms", ("device", "cloud"): "device_to_cloud_ms"}
    known = [(name, at) for name, at in legs if at is not None]
    for (a, at_a), (b, at_b) in zip(known, known[1:]):
        if (a, b) in names:
            hops[names[(a, b)]] = at_b - at_a
    return hops


@click.command("logs")
@click.argument("device")
@click.option("--lines", type=click.IntRange(1, 1000), default=100, show_default=True, help="How many of the last lines.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=1), default=60, show_default=True, help="Seconds to wait.")
@api_options
def logs(fetch: Callable[..., Any], as_json: bool, device: str, lines: int, wait_s: float) -> None:
    """Fetch the last N lines of DEVICE's agent log (sent at bulk priority through store-and-forward)."""
    started = int(time.time() * 1000) - 1
    row = _run_command(fetch, device, "logs", {"lines": str(lines)}, wait_s)
    deadline = time.monotonic() + wait_s
    got: list[dict[str, Any]] = []
    want = None
    while True:
        got = fetch(f"/v1/devices/{_q(device)}/logs", params={"after_ms": started})["logs"]
        if row["status"] == "done" and want is None:
            want = next((int(p.partition("=")[2]) for p in row["detail"].split() if p.startswith("records=")), 0)
        if want is not None and len(got) >= want or time.monotonic() >= deadline or row["status"] in ("failed", "expired"):
            break
        time.sleep(0.3)
        if row["status"] not in ("done", "failed", "expired"):
            row = next(r for r in fetch(f"/v1/devices/{_q(device)}/commands")["commands"] if r["seq"] == row["seq"])
    text = [str(r["values"].get("line", "")) for r in sorted(got, key=lambda r: (r["ts_ms"], r["values"].get("n", 0)))]
    if as_json:
        _echo_json({"device_id": device, "command": row, "lines": text})
        return
    if row["status"] != "done":
        raise OperatorError(f"logs of {device} not delivered within {wait_s:g} s: {row['status']} {row['detail']}".strip())
    click.echo("\n".join(text) if text else f"{device}: its log is empty")


@click.command("reboot")
@click.argument("device")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True, help="Seconds to deliver it in.")
@api_options
def reboot(fetch: Callable[..., Any], as_json: bool, device: str, ttl: int) -> None:
    """Ask DEVICE to reboot; its gateway holds the request until the device takes it or the TTL passes."""
    made = fetch(f"/v1/devices/{_q(device)}/commands", "POST", {"name": "reboot", "args": {}, "ttl_s": ttl})
    if as_json:
        _echo_json(made)
        return
    click.echo(f"reboot of {device} queued as command {made['seq']} (`edgefleet devices commands {device}` follows it)")


@click.command("show")
@click.argument("device")
@api_options
def show_device(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """Show DEVICE: lifecycle state, site and gateway, tags, groups, config sync and its whole inventory."""
    where = 'id = "' + device.replace("\\", "\\\\").replace('"', '\\"') + '"'
    rows = fetch("/v1/fleet/devices", params={"where": where})["devices"]
    if not rows:
        raise OperatorError(f"No device by the id of {device!r} was found (`edgefleet devices list` shows the known ones)")
    v = rows[0]
    if as_json:
        _echo_json(v)
        return
    cfg = v["config"]
    lines = [
        f"device {v['device_id']}: {v['state']}, site {v['site_id']}, gateway {v['gateway_id']}",
        f"  last seen {_when(v['last_seen_ms'])} UTC, first seen {_when(v['first_seen_ms'])} UTC",
        f"  tags: {', '.join(v['tags']) or '-'}; groups: {', '.join(v['groups']) or '-'}",
        f"  config: desired {cfg['desired_version'] or '-'}, applied {cfg['applied_version'] or '-'}"
        + (" (DRIFT)" if cfg["drift"] else ""),
        "  inventory:" if v["inventory"] else "  inventory: none reported yet",
    ]
    width = max((len(k) for k in v["inventory"]), default=0)
    lines += [f"    {k.ljust(width)}  {val}" for k, val in sorted(v["inventory"].items())]
    click.echo("\n".join(lines))


def register(devices: click.Group) -> None:
    """Add the fleet sub-commands to ``edgefleet devices``."""
    for cmd in (show_device, tag_device, set_state, history, ghosts, ping, logs, reboot):
        devices.add_command(cmd)


# -- groups ----------------------------------------------------------------------------------------


@click.group()
def groups() -> None:
    """Static groups (listed members) and dynamic groups (a saved --where query)."""


@groups.command("list")
@api_options
def list_groups(fetch: Callable[..., Any], as_json: bool) -> None:
    """List groups with their members (a dynamic group's are evaluated now)."""
    rows = fetch("/v1/groups")["groups"]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no groups yet (`edgefleet groups create NAME [--where QUERY]`)")
        return
    click.echo(format_table(["GROUP", "KIND", "QUERY", "MEMBERS"],
                            [[r["name"], r["kind"], r["query"] or "-", ",".join(r["members"]) or "-"] for r in rows]))


@groups.command("create")
@click.argument("name")
@click.option("--where", help="Make it dynamic: its members are the devices matching this query.")
@api_options
def create_group(fetch: Callable[..., Any], as_json: bool, name: str, where: str | None) -> None:
    """Create group NAME: static (add members with `groups add`) or dynamic (--where)."""
    body = {"name": name, "kind": "dynamic" if where else "static", "query": where}
    row = fetch("/v1/groups", "POST", body)
    if as_json:
        _echo_json(row)
        return
    click.echo(f"group {row['name']} created ({row['kind']}{': ' + row['query'] if row['query'] else ''})")


@groups.command("delete")
@click.argument("name")
@api_options
def delete_group(fetch: Callable[..., Any], as_json: bool, name: str) -> None:
    """Delete group NAME (its devices stay; config set on the group no longer applies)."""
    body = fetch(f"/v1/groups/{_q(name)}", "DELETE")
    click.echo(json.dumps(body) if as_json else f"group {name} deleted")


def _members(fetch: Callable[..., Any], as_json: bool, name: str, add: list[str], remove: list[str]) -> None:
    body = fetch(f"/v1/groups/{_q(name)}/members", "POST", {"add": add, "remove": remove})
    if as_json:
        _echo_json(body)
        return
    click.echo(f"group {name}: {len(body['members'])} members: {', '.join(body['members']) or '(none)'}")


@groups.command("add")
@click.argument("name")
@click.argument("device_ids", nargs=-1, required=True, metavar="DEVICE...")
@api_options
def add_members(fetch: Callable[..., Any], as_json: bool, name: str, device_ids: tuple[str, ...]) -> None:
    """Add devices to static group NAME."""
    _members(fetch, as_json, name, list(device_ids), [])


@groups.command("remove")
@click.argument("name")
@click.argument("device_ids", nargs=-1, required=True, metavar="DEVICE...")
@api_options
def remove_members(fetch: Callable[..., Any], as_json: bool, name: str, device_ids: tuple[str, ...]) -> None:
    """Remove devices from static group NAME."""
    _members(fetch, as_json, name, [], list(device_ids))


# -- config ----------------------------------------------------------------------------------------


@click.group()
def config() -> None:
    """Layered config: global < site < group < device, with locks and provenance."""


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _config_change(fetch: Callable[..., Any], as_json: bool, body: dict[str, Any]) -> None:
    out = fetch("/v1/config/set", "POST", body)
    if as_json:
        _echo_json(out)
        return
    changed = out["changed"]
    verb = "would change" if out["dry_run"] else "changes"
    click.echo(f"{out['layer']} {out['key']}: {verb} {len(changed)} device(s)")
    for device, keys in changed.items():
        click.echo(f"  {device}: {', '.join(keys)}")
    for r in out["refused"]:
        click.echo(f"  refused on {r['layer']}: {r['key']} is locked by {r['locked_by']}")
    if not out["dry_run"]:
        click.echo(f"queued config for {len(out['queued'])} device(s)")
    for problem in out.get("problems", []):
        click.echo(f"  problem: {problem}", err=True)


@config.command("set")
@click.argument("layer")
@click.argument("key")
@click.argument("value")
@click.option("--lock", is_flag=True, help="Lock KEY at this layer: more specific layers cannot override it.")
@click.option("--unlock", is_flag=True, help="Remove this layer's lock on KEY.")
@click.option("--dry-run", is_flag=True, help="Only show which devices would change.")
@click.option("--by", default="operator", show_default=True)
@api_options
def config_set(fetch: Callable[..., Any], as_json: bool, layer: str, key: str, value: str, lock: bool,
               unlock: bool, dry_run: bool, by: str) -> None:
    """Set KEY to VALUE (JSON, else text) at LAYER: global, site:NAME, group:NAME or device:ID."""
    _config_change(fetch, as_json, {"layer": layer, "key": key, "value": _value(value), "lock": lock,
                                    "unlock": unlock, "dry_run": dry_run, "by": by})


@config.command("unset")
@click.argument("layer")
@click.argument("key")
@click.option("--dry-run", is_flag=True, help="Only show which devices would change.")
@click.option("--by", default="operator", show_default=True)
@api_options
def config_unset(fetch: Callable[..., Any], as_json: bool, layer: str, key: str, dry_run: bool, by: str) -> None:
    """Remove KEY from LAYER (less specific layers then decide it)."""
    _config_change(fetch, as_json, {"layer": layer, "key": key, "unset": True, "dry_run": dry_run, "by": by})


@config.command("explain")
@click.argument("device")
@api_options
def config_explain(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """For each of DEVICE's config keys: its value, the layer that set it, its lock, refused overrides."""
    body = fetch(f"/v1/config/explain/{_q(device)}")
    if as_json:
        _echo_json(body)
        return
    applied = body["applied_version"] or "none yet"
    click.echo(f"{device}: desired version {body['version']}, applied {applied}{' (DRIFT)' if body['drift'] else ''}")
    if not body["keys"]:
        click.echo("  no config keys set for this device")
        return
    click.echo(format_table(["KEY", "VALUE", "SET BY", "LOCKED BY", "REFUSED"],
                            [[r["key"], json.dumps(r["value"]), r["layer"] or "-", r["locked_by"] or "-",
                              ",".join(r["refused"]) or "-"] for r in body["keys"]]))


@config.command("status")
@api_options
def config_status(fetch: Callable[..., Any], as_json: bool) -> None:
    """Per device: the desired config version, the version it applied, and whether they differ (drift)."""
    rows = fetch("/v1/config/status")["devices"]
    if as_json:
        _echo_json(rows)
        return
    click.echo(format_table(["DEVICE", "DESIRED", "APPLIED", "DRIFT"],
                            [[r["device_id"], r["desired_version"] or "-", r["applied_version"] or "-",
                              "yes" if r["drift"] else "no"] for r in rows]))


@config.command("layers")
@api_options
def config_layers(fetch: Callable[..., Any], as_json: bool) -> None:
    """Show every config document with its locks."""
    rows = fetch("/v1/config/layers")["layers"]
    if as_json:
        _echo_json(rows)
        return
    for r in rows:
        label = r["kind"] if r["kind"] == "global" else f"{r['kind']}:{r['name']}"
        click.echo(f"{label} (by {r['updated_by']} at {_when(r['updated_ms'])} UTC)")
        for key in sorted(r["values"]):
            lock = " [locked]" if key in r["locked"] else ""
            click.echo(f"  {key} = {json.dumps(r['values'][key])}{lock}")


# -- metrics ---------------------------------------------------------------------------------------


@click.command("metrics")
@click.argument("device", required=False)
@click.option("--site", help="Every device of this site instead of one device.")
@click.option("--since", default="1h", show_default=True, metavar="DURATION", help="How far back: 15m, 1h, 2d.")
@click.option("--metric", help="Only this metric.")
@click.option("--tier", type=click.Choice(["auto", "raw", "minute", "hour"]), default="auto", show_default=True,
              help="auto: the finest tier retention still holds for --since.")
@api_options
def metrics(fetch: Callable[..., Any], as_json: bool, device: str | None, site: str | None, since: str,
            metric: str | None, tier: str) -> None:
    """Metrics of DEVICE (or --site) over a time range, from raw samples or minute/hour aggregates."""
    if (device is None) == (site is None):
        raise click.UsageError("give DEVICE or --site (one of them)")
    seconds = _duration(since, "--since")
    since_ms = int(time.time() * 1000 - seconds * 1000)
    params = {"since_ms": since_ms, "tier": tier} | ({"device": device} if device else {"site": site})
    if metric:
        params["metric"] = metric
    body = fetch("/v1/metrics", params=params)
    if as_json:
        _echo_json(body)
        return
    points = body["points"]
    if not points:
        click.echo(f"no {body['tier']} metrics for {device or site} since {_when(since_ms)} UTC")
        return
    if body["tier"] == "raw":
        click.echo(format_table(["DEVICE", "METRIC", "TIME (UTC)", "VALUE"],
                                [[p["device_id"], p["metric"], _when(p["ts_ms"]), p["value"]] for p in points]))
    else:
        click.echo(format_table(["DEVICE", "METRIC", f"{body['tier'].upper()} (UTC)", "COUNT", "MIN", "MEAN", "MAX"],
                                [[p["device_id"], p["metric"], _when(p["ts_ms"]), p["count"], p["min"],
                                  round(p["mean"], 3), p["max"]] for p in points]))


register(ops_cli.devices)  # whichever of the two modules is imported first, ``edgefleet devices`` has them

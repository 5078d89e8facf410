"""Operator commands for knowing the fleet (they talk to the cloud's operator API, like every operator command):

    edgefleet devices show ID | tag ID +canary -old | set-state ID STATE --reason R | history ID | ghosts [--silent-for 7d]
    edgefleet devices ping ID | logs ID --lines N | reboot ID
    edgefleet groups list | create NAME [--where Q] | delete NAME | add NAME DEVICE... | remove NAME DEVICE...

``DEVICE_COMMANDS`` are plain commands: ``cloud.cli.devices`` builds the ``devices`` group with them.
Layered config and metrics are ``cloud.cli.config``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from cloud.cli.helpers import OperatorError, api_options, duration_option, emit, format_table, q, when

__all__ = ["DEVICE_COMMANDS", "groups"]


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
    body = fetch(f"/v1/devices/{q(device)}/tags", "POST", {"add": add, "remove": remove})
    emit(body, as_json, lambda b: f"{device}: tags now {', '.join(b['tags']) or '(none)'}")


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
    row = fetch(f"/v1/devices/{q(device)}/state", "POST", {"state": state, "reason": reason, "by": by})
    emit(row, as_json, lambda r: f"{device}: {r['from_state']} -> {r['to_state']} by {r['by']} ({r['reason'] or 'no reason'})")


@click.command("history")
@click.argument("device")
@api_options
def history(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """Show DEVICE's lifecycle transitions, oldest first."""
    rows = fetch(f"/v1/devices/{q(device)}/history")["history"]
    emit(rows, as_json, lambda rows: format_table(
        ["WHEN (UTC)", "FROM", "TO", "BY", "REASON"],
        [[when(r["at_ms"]), r["from_state"], r["to_state"], r["by"], r["reason"] or "-"] for r in rows],
    ) if rows else f"{device}: no lifecycle transitions yet (it is in its first state)")


@click.command("ghosts")
@click.option("--silent-for", "silent_for", metavar="DURATION", help="Silent longer than this (default: the cloud's).")
@api_options
def ghosts(fetch: Callable[..., Any], as_json: bool, silent_for: str | None) -> None:
    """List ghost devices: known, not retired, and silent for longer than a configured time."""
    params = {"silent_s": duration_option(silent_for, "--silent-for")} if silent_for else None
    body = fetch("/v1/ghosts", params=params)
    emit(body, as_json, lambda b: format_table(
        ["DEVICE", "SITE", "STATE", "LAST SEEN (UTC)", "SILENT (s)"],
        [[r["device_id"], r["site_id"], r["state"], when(r["last_seen_ms"]), round(r["silent_ms"] / 1000)]
         for r in b["ghosts"]],
    ) if b["ghosts"] else f"no ghost devices (none silent for more than {b['silent_s']:g} s)")


# -- devices: remote diagnostics ------------------------------------------------------------------


def _run_command(fetch: Callable[..., Any], device: str, name: str, args: dict[str, str], wait_s: float) -> dict[str, Any]:
    """Queue a command, then wait until it is final or ``wait_s`` passes; the command's last row."""
    made = fetch(f"/v1/devices/{q(device)}/commands", "POST", {"name": name, "args": args, "ttl_s": max(1, int(wait_s))})
    deadline = time.monotonic() + wait_s
    while True:
        rows = fetch(f"/v1/devices/{q(device)}/commands")["commands"]
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
    if not as_json and row["status"] != "done":
        raise OperatorError(f"ping to {device} not answered within {wait_s:g} s: {row['status']} {row['detail']}".strip())
    legs = [f"  {name.removesuffix('_ms').replace('_', ' ')}: {ms} ms" for name, ms in hops.items() if name != "total_ms"]
    emit({"device_id": device, "seq": row["seq"], "status": row["status"], "detail": row["detail"], "hops": hops},
         as_json, "\n".join([f"pong from {device}: {hops.get('total_ms')} ms round trip", *legs]))


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
        got = fetch(f"/v1/devices/{q(device)}/logs", params={"after_ms": started})["logs"]
        if row["status"] == "done" and want is None:
            want = next((int(p.partition("=")[2]) for p in row["detail"].split() if p.startswith("records=")), 0)
        if want is not None and len(got) >= want or time.monotonic() >= deadline or row["status"] in ("failed", "expired"):
            break
        time.sleep(0.3)
        if row["status"] not in ("done", "failed", "expired"):
            row = next(r for r in fetch(f"/v1/devices/{q(device)}/commands")["commands"] if r["seq"] == row["seq"])
    text = [str(r["values"].get("line", "")) for r in sorted(got, key=lambda r: (r["ts_ms"], r["values"].get("n", 0)))]
    if not as_json and row["status"] != "done":
        raise OperatorError(f"logs of {device} not delivered within {wait_s:g} s: {row['status']} {row['detail']}".strip())
    emit({"device_id": device, "command": row, "lines": text}, as_json,
         "\n".join(text) if text else f"{device}: its log is empty")


@click.command("reboot")
@click.argument("device")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True, help="Seconds to deliver it in.")
@api_options
def reboot(fetch: Callable[..., Any], as_json: bool, device: str, ttl: int) -> None:
    """Ask DEVICE to reboot; its gateway holds the request until the device takes it or the TTL passes."""
    made = fetch(f"/v1/devices/{q(device)}/commands", "POST", {"name": "reboot", "args": {}, "ttl_s": ttl})
    emit(made, as_json, lambda m: f"reboot of {device} queued as command {m['seq']} "
                                  f"(`edgefleet devices commands {device}` follows it)")


@click.command("show")
@click.argument("device")
@api_options
def show_device(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """Show DEVICE: lifecycle state, site and gateway, tags, groups, config sync and its whole inventory."""
    where = 'id = "' + device.replace("\\", "\\\\").replace('"', '\\"') + '"'
    rows = fetch("/v1/fleet/devices", params={"where": where})["devices"]
    if not rows:
        raise OperatorError(f"No device by the id of {device!r} was found (`edgefleet devices list` shows the known ones)")
    emit(rows[0], as_json, _device_text)


def _device_text(v: dict[str, Any]) -> str:
    cfg = v["config"]
    lines = [
        f"device {v['device_id']}: {v['state']}, site {v['site_id']}, gateway {v['gateway_id']}",
        f"  last seen {when(v['last_seen_ms'])} UTC, first seen {when(v['first_seen_ms'])} UTC",
        f"  tags: {', '.join(v['tags']) or '-'}; groups: {', '.join(v['groups']) or '-'}",
        f"  config: desired {cfg['desired_version'] or '-'}, applied {cfg['applied_version'] or '-'}"
        + (" (DRIFT)" if cfg["drift"] else ""),
        "  inventory:" if v["inventory"] else "  inventory: none reported yet",
    ]
    width = max((len(k) for k in v["inventory"]), default=0)
    lines += [f"    {k.ljust(width)}  {val}" for k, val in sorted(v["inventory"].items())]
    return "\n".join(lines)


DEVICE_COMMANDS: tuple[click.Command, ...] = (show_device, tag_device, set_state, history, ghosts, ping, logs, reboot)
"""The fleet's commands on devices, for ``edgefleet devices`` (``cloud.cli.devices``)."""


# -- groups ----------------------------------------------------------------------------------------


@click.group()
def groups() -> None:
    """Static groups (listed members) and dynamic groups (a saved --where query)."""


@groups.command("list")
@api_options
def list_groups(fetch: Callable[..., Any], as_json: bool) -> None:
    """List groups with their members (a dynamic group's are evaluated now)."""
    rows = fetch("/v1/groups")["groups"]
    emit(rows, as_json, lambda rows: format_table(
        ["GROUP", "KIND", "QUERY", "MEMBERS"],
        [[r["name"], r["kind"], r["query"] or "-", ",".join(r["members"]) or "-"] for r in rows],
    ) if rows else "no groups yet (`edgefleet groups create NAME [--where QUERY]`)")


@groups.command("create")
@click.argument("name")
@click.option("--where", help="Make it dynamic: its members are the devices matching this query.")
@api_options
def create_group(fetch: Callable[..., Any], as_json: bool, name: str, where: str | None) -> None:
    """Create group NAME: static (add members with `groups add`) or dynamic (--where)."""
    body = {"name": name, "kind": "dynamic" if where else "static", "query": where}
    row = fetch("/v1/groups", "POST", body)
    emit(row, as_json, lambda r: f"group {r['name']} created ({r['kind']}{': ' + r['query'] if r['query'] else ''})")


@groups.command("delete")
@click.argument("name")
@api_options
def delete_group(fetch: Callable[..., Any], as_json: bool, name: str) -> None:
    """Delete group NAME (its devices stay; config set on the group no longer applies)."""
    emit(fetch(f"/v1/groups/{q(name)}", "DELETE"), as_json, f"group {name} deleted")


def _members(fetch: Callable[..., Any], as_json: bool, name: str, add: list[str], remove: list[str]) -> None:
    body = fetch(f"/v1/groups/{q(name)}/members", "POST", {"add": add, "remove": remove})
    emit(body, as_json, lambda b: f"group {name}: {len(b['members'])} members: {', '.join(b['members']) or '(none)'}")


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

"""``edgefleet devices``: every operator command on devices, from each feature, in one group.

    edgefleet devices list [--where Q] | gaps [DEVICE] | commands DEVICE | command DEVICE NAME [--arg k=v]... [--ttl S]
    edgefleet devices show | tag | set-state | history | ghosts | ping | logs | reboot      (cloud.cli.fleet)
    edgefleet devices preauthorize | identities | approve | revoke | quarantine | reinstate
                      | reprovision | revocations | rotate                                  (cloud.cli.security)

The commands on what devices sent (list, gaps, commands, command) are here; the fleet's and the
security feature's device commands are defined in their own modules, as plain commands, and
this module builds the one ``devices`` group from all of them: no module adds to another's group.

They talk to a running cloud's operator API over HTTP (``cloud.cli.client``); they never open
the store. Exit codes: 0 success, 2 the API could not be reached, refused the token or failed
(the message says which and what to do), as click does for usage errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from cloud.cli import ddi, fleet, security
from cloud.cli.helpers import api_options, emit, format_table, q, when

__all__ = ["COMMANDS", "devices"]


@click.command("list")
@click.option("--where", help="""Only devices matching a query, e.g. 'site = "plant-7" and id != "dev-3"'.""")
@api_options
def list_devices(fetch: Callable[..., Any], as_json: bool, where: str | None) -> None:
    """List the devices the cloud has seen (all, or those matching --where), with lifecycle state, tags,
    groups, firmware and config drift.

    --where takes the query language: site, id, state, fw, hw, model, os, attr.NAME (inventory),
    tag:NAME and group = "NAME", e.g. 'site = "plant-7" and fw < "2.1" and tag:canary'.
    """
    rows = fetch("/v1/fleet/devices", params={"where": where} if where else None)["devices"]

    def human(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no devices yet" if not where else f"no device matches {where}"
        return format_table(
            ["DEVICE", "SITE", "GATEWAY", "STATE", "FW", "TAGS", "GROUPS", "CONFIG", "LAST SEEN (UTC)"],
            [[r["device_id"], r["site_id"], r["gateway_id"], r.get("state", "-"),
              (r.get("inventory") or {}).get("firmware_version", "-"), ",".join(r.get("tags") or ()) or "-",
              ",".join(r.get("groups") or ()) or "-", _config_cell(r.get("config") or {}), when(r["last_seen_ms"])]
             for r in rows],
        )

    emit(rows, as_json, human)


def _config_cell(cfg: Mapping[str, Any]) -> str:
    if not cfg.get("desired_version"):
        return "-"
    return f"drift ({cfg.get('applied_version') or 'none'} -> {cfg['desired_version']})" if cfg.get("drift") else "in sync"


@click.command("command")
@click.argument("device")
@click.argument("name")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="A command argument; repeat for more.")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True, help="Seconds to deliver it in.")
@api_options
def command_device(
    fetch: Callable[..., Any], as_json: bool, device: str, name: str, args: tuple[str, ...], ttl: int
) -> None:
    """Queue command NAME for DEVICE; its gateway holds it until the device takes it or the TTL passes."""
    made = fetch(f"/v1/devices/{q(device)}/commands", "POST", {"name": name, "args": _parse_args(args), "ttl_s": ttl})
    emit(made, as_json, lambda m: f"command {m['seq']} for {m['device_id']} queued: {name} "
                                  f"(expires {when(m['expires_ms'])} UTC)")


def _parse_args(pairs: Sequence[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--arg")
        if key in args:
            raise click.BadParameter(f"{key!r} is given twice", param_hint="--arg")
        args[key] = value
    return args


@click.command("commands")
@click.argument("device")
@api_options
def list_commands(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """List DEVICE's commands, oldest first, with where each one is (queued, held, delivered, done...)."""
    rows = fetch(f"/v1/devices/{q(device)}/commands")["commands"]
    emit(rows, as_json, lambda rows: format_table(
        ["SEQ", "NAME", "ARGS", "STATUS", "DETAIL", "CREATED (UTC)", "EXPIRES (UTC)", "UPDATED (UTC)"],
        [[r["seq"], r["name"], ",".join(f"{k}={v}" for k, v in sorted(r["args"].items())) or "-", r["status"],
          r["detail"] or "-", when(r["created_ms"]), when(r["expires_ms"]), when(r["updated_ms"])] for r in rows],
    ) if rows else f"no commands for {device} yet")


@click.command("gaps")
@click.argument("device", required=False)
@api_options
def list_gaps(fetch: Callable[..., Any], as_json: bool, device: str | None) -> None:
    """List reported gaps (records dropped by rule), of DEVICE or of every device.

    With DEVICE, also the unexplained missing ranges: sequences that are neither
    stored nor reported as dropped (these break the delivery promise).
    """
    body = fetch("/v1/gaps", params={"device": device} if device is not None else None)

    def human(body: dict[str, Any]) -> str:
        rows = body["gaps"]
        if not rows:
            lines = ["no gaps reported" + (f" for {device}" if device is not None else "")]
        else:
            lines = [format_table(
                ["DEVICE", "STREAM", "FIRST", "LAST", "COUNT", "REASON", "REPORTER", "REPORTED (UTC)"],
                [[r["device_id"], r["stream"], r["first_seq"], r["last_seq"], r["count"], r["reason"], r["reporter"],
                  when(r["received_ms"])] for r in rows],
            )]
        if device is not None:
            shown = "; ".join(
                f"{stream} " + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
                for stream, ranges in body.get("missing", {}).items()
            )
            lines.append(f"unexplained missing: {shown or 'none'}")
        return "\n".join(lines)

    emit(body, as_json, human)


COMMANDS: tuple[click.Command, ...] = (list_devices, command_device, list_commands, list_gaps)
"""The commands on what devices sent; ``devices`` adds the fleet's and security's device commands."""

devices = click.Group(
    "devices",
    commands=[*COMMANDS, *fleet.DEVICE_COMMANDS, *security.DEVICE_COMMANDS, *ddi.DEVICE_COMMANDS],
    help="Operator commands on devices.",
)

"""Operator commands on devices and sites:

    edgefleet devices list | gaps [DEVICE] | commands DEVICE | command DEVICE NAME [--arg k=v]... [--ttl S]
    edgefleet sites list | show SITE
    edgefleet alerts list [--state open|resolved|all] | ack ID [--by NAME] | silence TARGET --for 1h

They talk to a running cloud's operator API over HTTP (``cloud.api_client``);
they never open the store. Each command takes the same connection options
(``api_options``); later operator commands reuse them.

Exit codes: 0 success, 2 the API could not be reached, refused the token or
failed (the message says which and what to do), as click does for usage errors.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import click

from cloud.api_client import DEFAULT_API_URL, ApiClient, resolve_endpoint
from common.errors import ApiError, ConfigError

__all__ = [
    "OperatorError",
    "alerts",
    "api_options",
    "devices",
    "format_site",
    "format_table",
    "parse_duration",
    "sites",
]


class OperatorError(click.ClickException):
    """An operator command that could not do its job; exits 2."""

    exit_code = 2


def api_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --api, --token, --data-dir and --json; the command receives ``fetch`` and ``as_json``.

    ``fetch(path, method="GET", json_body=None, **kw)`` returns the decoded JSON answer; ``kw`` goes to
    ``ApiClient.request`` (``content``, ``params``, ``headers``, ``timeout``).
    """

    @click.option(
        "--api",
        "api",
        envvar="EDGEFLEET_API",
        metavar="URL",
        help=f"Operator API URL [env EDGEFLEET_API; else DIR/endpoints.json; else {DEFAULT_API_URL}].",
    )
    @click.option("--token", envvar="EDGEFLEET_TOKEN", metavar="TOKEN", help="API bearer token [env EDGEFLEET_TOKEN].")
    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=str),
        metavar="DIR",
        help="The cloud's data dir: read the token from DIR/api_token and the URL from DIR/endpoints.json.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @functools.wraps(fn)
    def wrapper(api: str | None, token: str | None, data_dir: str | None, as_json: bool, **kwargs: Any) -> Any:
        def fetch(path: str, method: str = "GET", json_body: Any = None, **kw: Any) -> Any:
            try:
                with ApiClient(resolve_endpoint(api, token, data_dir)) as client:
                    return client.request(method, path, json_body=json_body, **kw)
            except (ApiError, ConfigError) as exc:
                raise OperatorError(str(exc)) from exc

        return fn(fetch=fetch, as_json=as_json, **kwargs)

    return wrapper


@click.group()
def devices() -> None:
    """Operator commands on devices."""


@devices.command("list")
@click.option("--where", help="""Only devices matching a query, e.g. 'site = "plant-7" and id != "dev-3"'.""")
@api_options
def list_devices(fetch: Callable[..., Any], as_json: bool, where: str | None) -> None:
    """List the devices the cloud has seen (all, or those matching --where), with lifecycle state, tags,
    groups, firmware and config drift.

    --where takes the query language: site, id, state, fw, hw, model, os, attr.NAME (inventory),
    tag:NAME and group = "NAME", e.g. 'site = "plant-7" and fw < "2.1" and tag:canary'.
    """
    rows = fetch("/v1/fleet/devices", params={"where": where} if where else None)["devices"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no devices yet" if not where else f"no device matches {where}")
        return
    click.echo(
        format_table(
            ["DEVICE", "SITE", "GATEWAY", "STATE", "FW", "TAGS", "GROUPS", "CONFIG", "LAST SEEN (UTC)"],
            [
                [
                    r["device_id"],
                    r["site_id"],
                    r["gateway_id"],
                    r.get("state", "-"),
                    (r.get("inventory") or {}).get("firmware_version", "-"),
                    ",".join(r.get("tags") or ()) or "-",
                    ",".join(r.get("groups") or ()) or "-",
                    _config_cell(r.get("config") or {}),
                    _when(r["last_seen_ms"]),
                ]
                for r in rows
            ],
        )
    )


def _config_cell(cfg: Mapping[str, Any]) -> str:
    if not cfg.get("desired_version"):
        return "-"
    return f"drift ({cfg.get('applied_version') or 'none'} -> {cfg['desired_version']})" if cfg.get("drift") else "in sync"


@devices.command("command")
@click.argument("device")
@click.argument("name")
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="A command argument; repeat for more.")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True, help="Seconds to deliver it in.")
@api_options
def command_device(
    fetch: Callable[..., Any], as_json: bool, device: str, name: str, args: tuple[str, ...], ttl: int
) -> None:
    """Queue command NAME for DEVICE; its gateway holds it until the device takes it or the TTL passes."""
    body = {"name": name, "args": _parse_args(args), "ttl_s": ttl}
    made = fetch(f"/v1/devices/{quote(device, safe='')}/commands", "POST", body)
    if as_json:
        click.echo(json.dumps(made, indent=2))
        return
    expires = _when(made["expires_ms"])
    click.echo(f"command {made['seq']} for {made['device_id']} queued: {name} (expires {expires} UTC)")


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


@devices.command("commands")
@click.argument("device")
@api_options
def list_commands(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """List DEVICE's commands, oldest first, with where each one is (queued, held, delivered, done...)."""
    rows = fetch(f"/v1/devices/{quote(device, safe='')}/commands")["commands"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no commands for {device} yet")
        return
    click.echo(
        format_table(
            ["SEQ", "NAME", "ARGS", "STATUS", "DETAIL", "CREATED (UTC)", "EXPIRES (UTC)", "UPDATED (UTC)"],
            [
                [
                    r["seq"],
                    r["name"],
                    ",".join(f"{k}={v}" for k, v in sorted(r["args"].items())) or "-",
                    r["status"],
                    r["detail"] or "-",
                    _when(r["created_ms"]),
                    _when(r["expires_ms"]),
                    _when(r["updated_ms"]),
                ]
                for r in rows
            ],
        )
    )


@devices.command("gaps")
@click.argument("device", required=False)
@api_options
def list_gaps(fetch: Callable[..., Any], as_json: bool, device: str | None) -> None:
    """List reported gaps (records dropped by rule), of DEVICE or of every device.

    With DEVICE, also the unexplained missing ranges: sequences that are neither
    stored nor reported as dropped (these break the delivery promise).
    """
    body = fetch("/v1/gaps" + (f"?{urlencode({'device': device})}" if device is not None else ""))
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    rows = body["gaps"]
    if not rows:
        click.echo("no gaps reported" + (f" for {device}" if device is not None else ""))
    else:
        click.echo(
            format_table(
                ["DEVICE", "STREAM", "FIRST", "LAST", "COUNT", "REASON", "REPORTER", "REPORTED (UTC)"],
                [
                    [
                        r["device_id"],
                        r["stream"],
                        r["first_seq"],
                        r["last_seq"],
                        r["count"],
                        r["reason"],
                        r["reporter"],
                        _when(r["received_ms"]),
                    ]
                    for r in rows
                ],
            )
        )
    if device is not None:
        missing = body.get("missing", {})
        shown = "; ".join(
            f"{stream} " + ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
            for stream, ranges in missing.items()
        )
        click.echo(f"unexplained missing: {shown or 'none'}")


@click.group()
def sites() -> None:
    """Operator commands on sites."""


@sites.command("list")
@api_options
def list_sites(fetch: Callable[..., Any], as_json: bool) -> None:
    """List every site at a glance: gateways and their link, devices online/offline/total, firmware versions
    in use, open alerts and backlog."""
    rows = fetch("/v1/sites")["sites"]
    overview = {o["site_id"]: o for o in fetch("/v1/fleet/sites")["sites"]}
    rows = [r | {k: v for k, v in overview.get(r["site_id"], {}).items() if k != "site_id"} for r in rows]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no sites yet")
        return
    click.echo(
        format_table(
            ["SITE", "GATEWAYS (LINK)", "DEVICES ON/OFF/ALL", "FIRMWARE", "OPEN ALERTS", "BACKLOG", "LAST SEEN (UTC)"],
            [
                [
                    r["site_id"],
                    " ".join(f"{gw}:{_value(link)}" for gw, link in sorted(r.get("links", {}).items()))
                    or f"{r['gateway_count']} (no status yet)",
                    _devices_cell(r),
                    " ".join(f"{v}x{n}" for v, n in (r.get("firmware") or {}).items()) or "-",
                    r.get("open_alerts", 0),
                    _bytes(r.get("backlog_bytes", 0)),
                    _when(r["last_seen_ms"]),
                ]
                for r in rows
            ],
        )
    )


def _devices_cell(row: Mapping[str, Any]) -> str:
    d = row.get("devices")
    if not isinstance(d, Mapping):
        return str(row["device_count"])
    return f"{d['online']}/{d['offline']}/{d['total']}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:g} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.1f} GiB"


@sites.command("show")
@click.argument("site")
@api_options
def show_site(fetch: Callable[..., Any], as_json: bool, site: str) -> None:
    """Show one site's health: each gateway's status (link, backlog, disk, drops), devices online, gaps."""
    detail = fetch(f"/v1/sites/{quote(site, safe='')}")
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    click.echo(format_site(detail))


def format_site(detail: Mapping[str, Any]) -> str:
    """A site's detail (``GET /v1/sites/{site}``) as a readable block; every status key, sorted."""
    lines = [
        f"site {detail['site_id']}: first seen {_when(detail['first_seen_ms'])},"
        f" last seen {_when(detail['last_seen_ms'])} (UTC)"
    ]
    counts = detail["devices"]
    if counts.get("online") is None:
        lines.append(f"devices: {counts['total']}")
    else:
        window = _duration(counts["online_within_ms"])
        lines.append(f"devices: {counts['online']} online of {counts['total']} (records within the last {window})")
    for gw in detail["gateways"]:
        status = gw.get("status") or {}
        link = f", link {_value(status['link'])}" if "link" in status else ""
        lines.append("")
        lines.append(
            f"gateway {gw['gateway_id']}: last seen {_when(gw['last_seen_ms'])}, serves {gw['devices']} devices{link}"
        )
        if gw.get("status_ts_ms") is None:
            lines.append("  no status reported yet")
            continue
        lines.append(f"  status at {_when(gw['status_ts_ms'])} (UTC):")
        width = max((len(k) for k in status), default=0)
        lines += [f"    {k.ljust(width)}  {_value(status[k])}" for k in sorted(status)]
    lines.append("")
    totals = detail["gap_totals"]
    if not totals:
        lines.append("gaps: none reported")
    else:
        lines.append("gaps (records dropped by rule and reported):")
        table = format_table(
            ["DEVICE", "STREAM", "REASON", "RANGES", "RECORDS"],
            [[t["device_id"], t["stream"], t["reason"], t["ranges"], t["count"]] for t in totals],
        )
        lines += ["  " + line for line in table.splitlines()]
    return "\n".join(lines)


@click.group()
def alerts() -> None:
    """Operator commands on alerts: list, acknowledge, silence."""


@alerts.command("list")
@click.option("--state", type=click.Choice(["open", "resolved", "all"]), default="open", show_default=True)
@click.option("--subject", metavar="ID", help="Only alerts about this device or gateway.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=500, show_default=True)
@api_options
def list_alerts(fetch: Callable[..., Any], as_json: bool, state: str, subject: str | None, limit: int) -> None:
    """List alerts, newest first."""
    query = {"state": state, "limit": limit} | ({"subject": subject} if subject is not None else {})
    rows = fetch(f"/v1/alerts?{urlencode(query)}")["alerts"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no {state} alerts" if state != "all" else "no alerts")
        return
    click.echo(
        format_table(
            ["ID", "RULE", "SUBJECT", "SEVERITY", "STATE", "OPENED (UTC)", "RESOLVED (UTC)", "ACKED BY", "LAST"],
            [
                [
                    r["id"],
                    r["rule"],
                    r["subject"],
                    r["severity"],
                    r["state"],
                    _when(r["opened_ms"]),
                    _when(r["resolved_ms"]) if r["resolved_ms"] is not None else "-",
                    r["acked_by"] or "-",
                    r["last_event"],
                ]
                for r in rows
            ],
        )
    )


@alerts.command("ack")
@click.argument("alert_id", metavar="ID")
@click.option("--by", default="operator", show_default=True, help="Who is handling it.")
@api_options
def ack_alert(fetch: Callable[..., Any], as_json: bool, alert_id: str, by: str) -> None:
    """Acknowledge alert ID: someone is handling it (it still resolves on its own)."""
    row = fetch(f"/v1/alerts/{quote(alert_id, safe='')}/ack", "POST", {"by": by})
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"alert {row['id']} acknowledged by {row['acked_by']} ({row['state']})")


@alerts.command("silence")
@click.argument("target")
@click.option("--for", "for_", metavar="DURATION", required=True, help="How long: 90s, 15m, 1h, 2d (or seconds).")
@click.option("--by", default="operator", show_default=True, help="Who asks for it.")
@click.option("--reason", default="", help="Why, for the record.")
@api_options
def silence_alerts(fetch: Callable[..., Any], as_json: bool, target: str, for_: str, by: str, reason: str) -> None:
    """Silence TARGET (a rule name, or a device or gateway id): its new alerts open but announce nothing.

    An alert still open when the silence ends is announced then; one already announced still
    announces that it resolved.
    """
    try:
        seconds = parse_duration(for_)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from exc
    body = {"target": target, "for_s": seconds, "by": by, "reason": reason}
    row = fetch("/v1/silences", "POST", body)
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"{row['target']} silenced until {_when(row['until_ms'])} UTC (silence {row['id']})")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[smhd])+")
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``1h``, ``2d``, ``1h30m`` or a plain number of seconds; > 0."""
    spec = text.strip().lower()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", spec):
        seconds = float(spec)
    elif _DURATION.fullmatch(spec):
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(spec))
    else:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 15m, 1h, 2d, 1h30m)")
    if not seconds > 0:
        raise ValueError(f"duration {text!r} must be more than 0 seconds")
    return seconds


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; a column of numbers is right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _value(v: Any) -> str:
    """A status value: whole floats without ``.0`` (the wire carries numbers as float or int)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _duration(ms: int) -> str:
    return f"{ms // 60_000} min" if ms % 60_000 == 0 else f"{ms / 1000:g} s"


# the identity and security commands on devices (preauthorize, approve, revoke, ...) live in their own module
import cloud.security.cli  # noqa: E402,F401
# the fleet commands (tag, set-state, history, ghosts, ping, logs, reboot) live in cloud.fleet_cli,
# which adds them to ``devices`` when it is imported
import cloud.fleet_cli  # noqa: E402,F401

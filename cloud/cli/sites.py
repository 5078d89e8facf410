"""``edgefleet sites list | show SITE``: every site at a glance, and one site's health.

They talk to the cloud's operator API (``cloud.cli.client``), like every operator command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from cloud.cli.helpers import api_options, emit, format_table, human_bytes, q, value_text, when

__all__ = ["format_site", "sites"]


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
    emit(rows, as_json, lambda rows: format_table(
        ["SITE", "GATEWAYS (LINK)", "DEVICES ON/OFF/ALL", "FIRMWARE", "OPEN ALERTS", "BACKLOG", "LAST SEEN (UTC)"],
        [[r["site_id"],
          " ".join(f"{gw}:{value_text(link)}" for gw, link in sorted(r.get("links", {}).items()))
          or f"{r['gateway_count']} (no status yet)",
          _devices_cell(r),
          " ".join(f"{v}x{n}" for v, n in (r.get("firmware") or {}).items()) or "-",
          r.get("open_alerts", 0),
          human_bytes(r.get("backlog_bytes", 0)),
          when(r["last_seen_ms"])] for r in rows],
    ) if rows else "no sites yet")


def _devices_cell(row: Mapping[str, Any]) -> str:
    d = row.get("devices")
    if not isinstance(d, Mapping):
        return str(row["device_count"])
    return f"{d['online']}/{d['offline']}/{d['total']}"


@sites.command("show")
@click.argument("site")
@api_options
def show_site(fetch: Callable[..., Any], as_json: bool, site: str) -> None:
    """Show one site's health: each gateway's status (link, backlog, disk, drops), devices online, gaps."""
    emit(fetch(f"/v1/sites/{q(site)}"), as_json, format_site)


def format_site(detail: Mapping[str, Any]) -> str:
    """A site's detail (``GET /v1/sites/{site}``) as a readable block; every status key, sorted."""
    lines = [
        f"site {detail['site_id']}: first seen {when(detail['first_seen_ms'])},"
        f" last seen {when(detail['last_seen_ms'])} (UTC)"
    ]
    counts = detail["devices"]
    if counts.get("online") is None:
        lines.append(f"devices: {counts['total']}")
    else:
        window = _window(counts["online_within_ms"])
        lines.append(f"devices: {counts['online']} online of {counts['total']} (records within the last {window})")
    for gw in detail["gateways"]:
        status = gw.get("status") or {}
        link = f", link {value_text(status['link'])}" if "link" in status else ""
        lines.append("")
        lines.append(
            f"gateway {gw['gateway_id']}: last seen {when(gw['last_seen_ms'])}, serves {gw['devices']} devices{link}"
        )
        if gw.get("status_ts_ms") is None:
            lines.append("  no status reported yet")
            continue
        lines.append(f"  status at {when(gw['status_ts_ms'])} (UTC):")
        width = max((len(k) for k in status), default=0)
        lines += [f"    {k.ljust(width)}  {value_text(status[k])}" for k in sorted(status)]
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


def _window(ms: int) -> str:
    return f"{ms // 60_000} min" if ms % 60_000 == 0 else f"{ms / 1000:g} s"

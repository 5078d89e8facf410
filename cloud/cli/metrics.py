"""``edgefleet metrics DEVICE|--site S [--since 1h] [--metric M] [--tier auto|raw|minute|hour]``.

Raw samples or per-minute and per-hour aggregates (``tier=auto``: the finest tier retention still
holds for ``--since``), from the cloud's operator API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from cloud.cli.helpers import api_options, duration_option, emit, format_table, when

__all__ = ["metrics"]


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
    seconds = duration_option(since, "--since")
    since_ms = int(time.time() * 1000 - seconds * 1000)
    params = {"since_ms": since_ms, "tier": tier} | ({"device": device} if device else {"site": site})
    if metric:
        params["metric"] = metric
    body = fetch("/v1/metrics", params=params)

    def human(body: dict[str, Any]) -> str:
        points = body["points"]
        if not points:
            return f"no {body['tier']} metrics for {device or site} since {when(since_ms)} UTC"
        if body["tier"] == "raw":
            return format_table(["DEVICE", "METRIC", "TIME (UTC)", "VALUE"],
                                [[p["device_id"], p["metric"], when(p["ts_ms"]), p["value"]] for p in points])
        return format_table(["DEVICE", "METRIC", f"{body['tier'].upper()} (UTC)", "COUNT", "MIN", "MEAN", "MAX"],
                            [[p["device_id"], p["metric"], when(p["ts_ms"]), p["count"], p["min"], round(p["mean"], 3),
                              p["max"]] for p in points])

    emit(body, as_json, human)

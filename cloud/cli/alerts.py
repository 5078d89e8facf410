"""``edgefleet alerts list | ack ID | silence TARGET --for 1h``: alerts through the cloud's operator API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from cloud.cli.helpers import api_options, duration_option, emit, format_table, q, when

__all__ = ["alerts"]


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
    params = {"state": state, "limit": limit} | ({"subject": subject} if subject is not None else {})
    rows = fetch("/v1/alerts", params=params)["alerts"]
    emit(rows, as_json, lambda rows: format_table(
        ["ID", "RULE", "SUBJECT", "SEVERITY", "STATE", "OPENED (UTC)", "RESOLVED (UTC)", "ACKED BY", "LAST"],
        [[r["id"], r["rule"], r["subject"], r["severity"], r["state"], when(r["opened_ms"]), when(r["resolved_ms"]),
          r["acked_by"] or "-", r["last_event"]] for r in rows],
    ) if rows else (f"no {state} alerts" if state != "all" else "no alerts"))


@alerts.command("ack")
@click.argument("alert_id", metavar="ID")
@click.option("--by", default="operator", show_default=True, help="Who is handling it.")
@api_options
def ack_alert(fetch: Callable[..., Any], as_json: bool, alert_id: str, by: str) -> None:
    """Acknowledge alert ID: someone is handling it (it still resolves on its own)."""
    row = fetch(f"/v1/alerts/{q(alert_id)}/ack", "POST", {"by": by})
    emit(row, as_json, lambda r: f"alert {r['id']} acknowledged by {r['acked_by']} ({r['state']})")


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
    body = {"target": target, "for_s": duration_option(for_, "--for"), "by": by, "reason": reason}
    row = fetch("/v1/silences", "POST", body)
    emit(row, as_json, lambda r: f"{r['target']} silenced until {when(r['until_ms'])} UTC (silence {r['id']})")

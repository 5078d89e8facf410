"""Operator commands for DDI devices (``docs/DDI.md``), part of ``edgefleet devices``:

    edgefleet devices ddi-token DEVICE --site SITE [--hw MODEL]   # issue (or replace) its TargetToken; shown once
    edgefleet devices ddi-revoke DEVICE                            # the token stops working at the gateway
    edgefleet devices ddi-tokens [--site SITE]                     # who has one, issued and revoked when
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from cloud.cli.helpers import api_options, emit, format_table, q, when

__all__ = ["DEVICE_COMMANDS"]


@click.command("ddi-token")
@click.argument("device")
@click.option("--site", required=True, help="The site whose gateway the device polls.")
@click.option("--hw", default="ddi", show_default=True, help="Its hardware model (releases must list it).")
@api_options
def ddi_token(fetch: Callable[..., Any], as_json: bool, device: str, site: str, hw: str) -> None:
    """Enroll a device that runs SWUpdate (hawkBit DDI): issue its TargetToken, shown once; put it in the
    device's swupdate.cfg (suricatta: targettoken). Issuing again replaces the old token."""
    body = fetch("/v1/ddi-tokens", method="POST", json_body={"device_id": device, "site": site, "hw": hw})
    emit(body, as_json, lambda b: f"TargetToken for {b['device_id']} ({b['hw']}) at {b['site']} (shown once; put it in "
                                  f"swupdate.cfg as targettoken, see docs/DDI.md)\n{b['token']}")


@click.command("ddi-revoke")
@click.argument("device")
@api_options
def ddi_revoke(fetch: Callable[..., Any], as_json: bool, device: str) -> None:
    """Revoke a DDI device's TargetToken: its gateway answers it 401 from the next table on."""
    emit(fetch(f"/v1/ddi-tokens/{q(device)}/revoke", method="POST"), as_json, f"TargetToken of {device} revoked")


@click.command("ddi-tokens")
@click.option("--site", help="Only this site.")
@api_options
def ddi_tokens(fetch: Callable[..., Any], as_json: bool, site: str | None) -> None:
    """DDI devices and their TargetTokens (issued, revoked); the tokens themselves are never shown again."""
    rows = fetch("/v1/ddi-tokens", params={"site": site} if site else None)["tokens"]
    emit(rows, as_json, lambda rows: format_table(
        ["DEVICE", "SITE", "HW", "ISSUED (UTC)", "REVOKED (UTC)"],
        [[r["device_id"], r["site_id"], r["hw"], when(r["issued_ms"]), when(r["revoked_ms"]) if r["revoked_ms"] else ""]
         for r in rows]) if rows else "no DDI devices")


DEVICE_COMMANDS: tuple[click.Command, ...] = (ddi_token, ddi_revoke, ddi_tokens)

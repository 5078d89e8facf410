"""Operator commands: ``edgefleet devices list`` and ``edgefleet sites list``.

They talk to a running cloud's operator API over HTTP (``cloud.api_client``);
they never open the store. Each command takes the same connection options
(``api_options``); later operator commands reuse them.

Exit codes: 0 success, 2 the API could not be reached, refused the token or
failed (the message says which and what to do), as click does for usage errors.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from cloud.api_client import DEFAULT_API_URL, ApiClient, resolve_endpoint
from common.errors import ApiError, ConfigError

__all__ = ["OperatorError", "api_options", "devices", "format_table", "sites"]


class OperatorError(click.ClickException):
    """An operator command that could not do its job; exits 2."""

    exit_code = 2


def api_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --api, --token, --data-dir and --json; the command receives ``fetch(path)`` and ``as_json``."""

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
        def fetch(path: str) -> Any:
            try:
                with ApiClient(resolve_endpoint(api, token, data_dir)) as client:
                    return client.get(path)
            except (ApiError, ConfigError) as exc:
                raise OperatorError(str(exc)) from exc

        return fn(fetch=fetch, as_json=as_json, **kwargs)

    return wrapper


@click.group()
def devices() -> None:
    """Operator commands on devices."""


@devices.command("list")
@api_options
def list_devices(fetch: Callable[[str], Any], as_json: bool) -> None:
    """List every device the cloud has seen."""
    rows = fetch("/v1/devices")["devices"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no devices yet")
        return
    click.echo(
        format_table(
            ["DEVICE", "SITE", "GATEWAY", "LAST SEQ", "FIRST SEEN (UTC)", "LAST SEEN (UTC)"],
            [
                [
                    r["device_id"],
                    r["site_id"],
                    r["gateway_id"],
                    r["last_seq"],
                    _when(r["first_seen_ms"]),
                    _when(r["last_seen_ms"]),
                ]
                for r in rows
            ],
        )
    )


@click.group()
def sites() -> None:
    """Operator commands on sites."""


@sites.command("list")
@api_options
def list_sites(fetch: Callable[[str], Any], as_json: bool) -> None:
    """List every site with its gateway and device counts."""
    rows = fetch("/v1/sites")["sites"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no sites yet")
        return
    click.echo(
        format_table(
            ["SITE", "GATEWAYS", "DEVICES", "FIRST SEEN (UTC)", "LAST SEEN (UTC)"],
            [
                [
                    r["site_id"],
                    r["gateway_count"],
                    r["device_count"],
                    _when(r["first_seen_ms"]),
                    _when(r["last_seen_ms"]),
                ]
                for r in rows
            ],
        )
    )


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

"""What every operator command shares: the API connection options, one way to print, and the small formats.

    @group.command("list")
    @api_options                                  # --api, --token, --data-dir, --json
    def list_devices(fetch, as_json):
        rows = fetch("/v1/devices")["devices"]
        emit(rows, as_json, lambda rows: format_table(["DEVICE", "SITE"], [[r["device_id"], r["site_id"]] for r in rows])
             if rows else "no devices yet")

``emit(data, as_json, human)`` prints ``data`` as JSON with ``--json`` (for scripts), else what
``human(data)`` makes of it (a table, a line, a block). ``fetch`` talks to the operator API
(``cloud.cli.client``); an unreachable API or a refused request is an ``OperatorError`` (exit 2)
whose message says what went wrong and what to do.

Operator command modules (``devices``, ``sites``, ``alerts``, ``fleet``, ``config``, ``releases``,
``rollouts``, ``security``) import only this module and the API client.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click

from cloud.cli.client import DEFAULT_API_URL, ApiClient, resolve_endpoint
from common.errors import ApiError, ConfigError

__all__ = [
    "OperatorError",
    "api_options",
    "duration_option",
    "emit",
    "format_table",
    "human_bytes",
    "parse_duration",
    "q",
    "value_text",
    "when",
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


def emit(data: Any, as_json: bool, human: Callable[[Any], str | None] | str | None = None) -> None:
    """Print ``data``: as JSON with ``--json``, else ``human(data)`` (or ``human`` itself, a fixed line)."""
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    text = human(data) if callable(human) else human
    if text:
        click.echo(text)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; a column of numbers is right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def when(ms: int | None) -> str:
    """A time in ms since the epoch as ``YYYY-MM-DD HH:MM:SS`` (UTC); ``-`` for none."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def value_text(v: Any) -> str:
    """A status value: whole floats without ``.0`` (the wire carries numbers as float or int)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def human_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ``12.0 MiB``, ``3.2 GiB``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def q(text: str) -> str:
    """``text`` quoted as one path segment of a URL."""
    return quote(text, safe="")


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


def duration_option(text: str, param: str | None = None) -> float:
    """``parse_duration`` for a command's option: a bad value is click's usage error naming ``param``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from exc

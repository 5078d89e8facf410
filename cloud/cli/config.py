"""``edgefleet config``: layered device config (global < site < group < device) with locks and provenance.

    edgefleet config set LAYER KEY VALUE [--lock|--unlock] [--dry-run] | unset LAYER KEY [--dry-run]
    edgefleet config explain DEVICE | status | layers

``set`` and ``unset`` show which devices change (and, with ``--dry-run``, change nothing); the
cloud then records each changed device's desired config and queues a ``config`` command to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from cloud.cli.helpers import api_options, emit, format_table, q, when

__all__ = ["config"]


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
    emit(out, as_json, _change_text)
    if not as_json:
        for problem in out.get("problems", []):
            click.echo(f"  problem: {problem}", err=True)


def _change_text(out: dict[str, Any]) -> str:
    changed = out["changed"]
    verb = "would change" if out["dry_run"] else "changes"
    lines = [f"{out['layer']} {out['key']}: {verb} {len(changed)} device(s)"]
    lines += [f"  {device}: {', '.join(keys)}" for device, keys in changed.items()]
    lines += [f"  refused on {r['layer']}: {r['key']} is locked by {r['locked_by']}" for r in out["refused"]]
    if not out["dry_run"]:
        lines.append(f"queued config for {len(out['queued'])} device(s)")
    return "\n".join(lines)


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
    emit(fetch(f"/v1/config/explain/{q(device)}"), as_json, _explain_text)


def _explain_text(body: dict[str, Any]) -> str:
    applied = body["applied_version"] or "none yet"
    head = f"{body['device_id']}: desired version {body['version']}, applied {applied}{' (DRIFT)' if body['drift'] else ''}"
    if not body["keys"]:
        return head + "\n  no config keys set for this device"
    return head + "\n" + format_table(
        ["KEY", "VALUE", "SET BY", "LOCKED BY", "REFUSED"],
        [[r["key"], json.dumps(r["value"]), r["layer"] or "-", r["locked_by"] or "-", ",".join(r["refused"]) or "-"]
         for r in body["keys"]],
    )


@config.command("status")
@api_options
def config_status(fetch: Callable[..., Any], as_json: bool) -> None:
    """Per device: the desired config version, the version it applied, and whether they differ (drift)."""
    rows = fetch("/v1/config/status")["devices"]
    emit(rows, as_json, lambda rows: format_table(
        ["DEVICE", "DESIRED", "APPLIED", "DRIFT"],
        [[r["device_id"], r["desired_version"] or "-", r["applied_version"] or "-", "yes" if r["drift"] else "no"]
         for r in rows],
    ))


@config.command("layers")
@api_options
def config_layers(fetch: Callable[..., Any], as_json: bool) -> None:
    """Show every config document with its locks."""
    emit(fetch("/v1/config/layers")["layers"], as_json, _layers_text)


def _layers_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        label = r["kind"] if r["kind"] == "global" else f"{r['kind']}:{r['name']}"
        lines.append(f"{label} (by {r['updated_by']} at {when(r['updated_ms'])} UTC)")
        lines += [f"  {key} = {json.dumps(r['values'][key])}{' [locked]' if key in r['locked'] else ''}"
                  for key in sorted(r["values"])]
    return "\n".join(lines)

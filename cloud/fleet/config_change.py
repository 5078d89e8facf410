"""An operator's change to one config layer, and the explanation of one device's config.

    change = ConfigChange("site:plant-7", "sample_s", 5, lock=True, dry_run=True)
    out = change_config(store.fleet, store.commands, change, now_ms)   # which devices change, what is refused
    explain_config(store.fleet, "d1")                                   # each key: value, layer, lock, refused

Plan, then execute: ``change_config`` computes the layer's new document and every device's
desired config before and after it (``cloud.fleet.views.desired_configs``), so a dry run shows
exactly what a real one would change; a real one saves the layer, then records and queues the
changed configs (``cloud.fleet.config_push``). Blocking (it reads and writes the fleet records):
run it on the store thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloud.fleet import config_layers
from cloud.fleet.config_push import push_configs
from cloud.fleet.views import desired_configs, device_layers, device_views
from common.errors import ConfigError, FleetNotFound

if TYPE_CHECKING:
    from cloud.fleet.ports import CommandRecords, FleetRecords

__all__ = ["ConfigChange", "change_config", "explain_config", "parse_layer"]


def parse_layer(text: str) -> tuple[str, str]:
    """``global``, ``site:S``, ``group:G`` or ``device:D`` -> (kind, name); ``ConfigError`` otherwise."""
    kind, sep, name = text.partition(":")
    if kind == "global" and not sep:
        return "global", ""
    if kind in ("site", "group", "device") and name:
        return kind, name
    raise ConfigError(f"config layer {text!r} is not global, site:NAME, group:NAME or device:ID")


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Set (or with ``unset`` remove) ``key`` at ``layer``; ``lock``/``unlock`` its lock there."""

    layer: str
    key: str
    value: Any = None
    lock: bool = False
    unlock: bool = False
    unset: bool = False
    dry_run: bool = False
    by: str = "operator"


def change_config(
    fleet: FleetRecords, commands: CommandRecords, change: ConfigChange, now_ms: int
) -> dict[str, Any]:
    """``changed`` (device -> keys), ``refused`` (locked by a less specific layer), and unless a dry run the
    ``queued`` config commands and the ``problems`` of configs that do not fit a command."""
    kind, name = parse_layer(change.layer)
    docs = fleet.layers()
    old = next((d for d in docs if (d["kind"], d["name"]) == (kind, name)), None)
    layer = config_layers.Layer(kind, name, (old or {}).get("values") or {}, frozenset((old or {}).get("locked") or ()))
    if change.unset:
        kept = {k: v for k, v in layer.values.items() if not (k == change.key or k.startswith(change.key + "."))}
        layer = config_layers.Layer(kind, name, kept, layer.locked)
    else:
        layer = layer.set(change.key, change.value)
    locked = set(layer.locked)
    if change.lock:
        locked.add(change.key)
    if change.unlock:
        locked.discard(change.key)
    new_doc = {"kind": kind, "name": name, "values": dict(layer.values), "locked": sorted(locked)}
    new_docs = [d for d in docs if (d["kind"], d["name"]) != (kind, name)] + [new_doc]
    snap = fleet.fleet_snapshot()
    views = device_views(snap)
    before = desired_configs(snap, docs, views)
    after = desired_configs(snap, new_docs, views)
    refused = sorted({(r.key, r.layer, r.locked_by) for res in after.values() for r in res.refused
                      if r.layer == config_layers.Layer(kind, name).label})
    out: dict[str, Any] = {
        "layer": change.layer, "key": change.key, "dry_run": change.dry_run,
        "changed": config_layers.changed_devices(before, after),
        "refused": [{"key": k, "layer": lay, "locked_by": by} for k, lay, by in refused],
        "queued": [], "problems": [],
    }
    if change.dry_run:
        return out
    fleet.put_layer(kind, name, new_doc["values"], new_doc["locked"], change.by, now_ms)
    made, problems = push_configs(fleet, commands, now_ms)
    out["queued"] = [{"device_id": d, "seq": s} for d, s in made]
    out["problems"] = problems
    return out


def explain_config(fleet: FleetRecords, device_id: str) -> dict[str, Any]:
    """Per key of the device's config: its value, the layer that set it, its lock, the overrides refused."""
    views = {v["device_id"]: v for v in device_views(fleet.fleet_snapshot())}
    if device_id not in views:
        raise FleetNotFound(f"no device by the id of {device_id!r} (`edgefleet devices list` shows the known ones)")
    resolved = config_layers.merge(device_layers(views[device_id], fleet.layers()))
    rows = [r._asdict() | {"refused": list(r.refused)} for r in config_layers.explain(resolved)]
    cfg = views[device_id]["config"]
    return {"device_id": device_id, "version": resolved.version, "applied_version": cfg["applied_version"],
            "drift": cfg["applied_version"] != resolved.version if cfg["desired_version"] else False,
            "keys": rows}

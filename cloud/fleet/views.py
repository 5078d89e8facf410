"""The fleet as operators see it, computed with no I/O from one store snapshot (``FleetRecords.fleet_snapshot``).

    snap = store.fleet.fleet_snapshot()
    views = device_views(snap)                 # each device row + state, tags, groups, inventory, config
    [v for v in views if query.matches(node, query_view(v))]
    desired = desired_configs(snap, store.fleet.layers())   # device id -> config_layers.Resolved

Groups: a static group lists its members; a dynamic group is a saved query
(``cloud.fleet.query``) over the device view with its static groups (a dynamic group's
query does not see other dynamic groups, so membership never loops). Retired
devices are in no group.

Inventory attributes a device reports (``device_agent.inventory``): model, hw,
os, firmware_version, slot.*, net.*, location, storage_free_mb, config_version.
In queries they are ``model``, ``hw``, ``os``, ``fw`` and ``attr.NAME``.

``site_overview`` is every site at a glance (gateways and links, devices online, firmware in
use, open alerts, backlog) from the same snapshot, the sites, gateway statuses and open alerts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cloud.fleet import query
from cloud.fleet.config_layers import Layer, Resolved, merge
from common.protocol.messages import STREAMS

__all__ = [
    "FIRMWARE_ATTR",
    "ONLINE_WITHIN_MS",
    "desired_configs",
    "device_layers",
    "device_views",
    "dynamic_members",
    "query_view",
    "site_overview",
]

FIRMWARE_ATTR = "firmware_version"
ONLINE_WITHIN_MS = 300_000
"""A device whose records reached the cloud within this long counts as online (site health, overview)."""


def query_view(view: Mapping[str, Any]) -> dict[str, Any]:
    """A device view as the query language reads it (``id``, ``site``, ``state``, ``fw``, ``tag:``, ...)."""
    inv = dict(view.get("inventory") or {})
    attrs = {**inv, "gateway": view["gateway_id"], "last_seq": view["last_seq"]}
    return {
        "id": view["device_id"],
        "site": view["site_id"],
        "state": view.get("state", "active"),
        "hw": inv.get("hw"),
        "fw": inv.get(FIRMWARE_ATTR),
        "model": inv.get("model"),
        "os": inv.get("os"),
        "tags": list(view.get("tags") or ()),
        "groups": list(view.get("groups") or ()),
        "attrs": attrs,
    }


def _base_views(snap: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for row in snap["devices"]:
        device_id = row["device_id"]
        cfg = snap["config"].get(device_id)
        inv = snap["inventory"].get(device_id, {})
        applied = cfg["applied_version"] if cfg else None
        if cfg and applied is None and inv.get("config_version") == cfg["desired_version"]:
            applied = cfg["desired_version"]
        out.append(
            dict(row)
            | {
                "tags": list(snap["tags"].get(device_id, [])),
                "groups": [] if row.get("state") == "retired" else list(snap["members"].get(device_id, [])),
                "inventory": dict(inv),
                "config": {
                    "desired_version": cfg["desired_version"] if cfg else None,
                    "applied_version": applied,
                    "drift": bool(cfg) and applied != cfg["desired_version"],
                },
            }
        )
    return out


def dynamic_members(snap: Mapping[str, Any], views: Iterable[Mapping[str, Any]] | None = None) -> dict[str, list[str]]:
    """Dynamic group name -> the devices its query matches now (retired ones never)."""
    base = list(views) if views is not None else _base_views(snap)
    out: dict[str, list[str]] = {}
    for group in snap["groups"]:
        if group["kind"] != "dynamic":
            continue
        node = query.parse(group["query"])  # saved only after it parsed
        out[group["name"]] = [
            v["device_id"] for v in base if v.get("state") != "retired" and query.matches(node, query_view(v))
        ]
    return out


def device_views(snap: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every device row with ``state``, ``tags``, ``groups`` (static and dynamic, sorted), ``inventory`` and
    ``config`` (desired_version, applied_version, drift)."""
    views = _base_views(snap)
    dynamic = dynamic_members(snap, views)
    by_id = {v["device_id"]: v for v in views}
    for name, members in dynamic.items():
        for device_id in members:
            by_id[device_id]["groups"].append(name)
    for v in views:
        v["groups"] = sorted(set(v["groups"]))
    return views


def device_layers(view: Mapping[str, Any], docs: Iterable[Mapping[str, Any]]) -> list[Layer]:
    """The config layers that apply to a device: global, its site, each of its groups, itself."""
    wanted = {("global", ""), ("site", view["site_id"]), ("device", view["device_id"])}
    wanted |= {("group", g) for g in view.get("groups", ())}
    return [
        Layer(d["kind"], d["name"], d["values"] or {}, frozenset(d["locked"] or ()))
        for d in docs
        if (d["kind"], d["name"]) in wanted
    ]


def desired_configs(
    snap: Mapping[str, Any], docs: Iterable[Mapping[str, Any]], views: Iterable[Mapping[str, Any]] | None = None
) -> dict[str, Resolved]:
    """Device id -> its merged config (values, provenance, refused overrides, version); retired ones left out."""
    docs = list(docs)
    views = list(views) if views is not None else device_views(snap)
    return {v["device_id"]: merge(device_layers(v, docs)) for v in views if v.get("state") != "retired"}


def site_overview(
    sites: list[dict[str, Any]],
    snap: dict[str, Any],
    statuses: list[dict[str, Any]],
    open_alerts: list[dict[str, Any]],
    now_ms: int,
    online_within_ms: int = ONLINE_WITHIN_MS,
) -> list[dict[str, Any]]:
    """Per site: gateways (id, link, backlog bytes, backlog per stream with its oldest record's age), devices
    online/offline/total, firmware versions in use (version -> devices), open alerts about its devices and
    gateways, total backlog bytes, backlog per stream (records, bytes) and the oldest record's age."""
    out = []
    for site in sites:
        sid = site["site_id"]
        devs = [d for d in snap["devices"] if d["site_id"] == sid and d.get("state") != "retired"]
        online = sum(1 for d in devs if d["last_seen_ms"] >= now_ms - online_within_ms)
        firmware: dict[str, int] = {}
        for d in devs:
            version = snap["inventory"].get(d["device_id"], {}).get(FIRMWARE_ATTR)
            if version is not None:
                firmware[str(version)] = firmware.get(str(version), 0) + 1
        gws = []
        for g in statuses:
            if g["site_id"] != sid:
                continue
            status = g["status"] or {}
            backlog = sum(int(status.get(f"backlog.{s}.bytes", 0) or 0) for s in STREAMS)
            per_stream = {s: {"records": int(status.get(f"backlog.{s}.records", 0) or 0),
                              "bytes": int(status.get(f"backlog.{s}.bytes", 0) or 0),
                              "oldest_age_s": float(status.get(f"oldest_age_s.{s}", 0) or 0)} for s in STREAMS}
            gws.append({"gateway_id": g["gateway_id"], "link": status.get("link"), "backlog_bytes": backlog,
                        "last_seen_ms": g["last_seen_ms"], "backlog": per_stream})
        subjects = {d["device_id"] for d in devs} | {g["gateway_id"] for g in gws}
        out.append({
            "site_id": sid,
            "gateways": gws,
            "devices": {"total": len(devs), "online": online, "offline": len(devs) - online},
            "firmware": dict(sorted(firmware.items())),
            "open_alerts": sum(1 for a in open_alerts if a["subject"] in subjects),
            "backlog_bytes": sum(g["backlog_bytes"] for g in gws),
            "backlog": {s: {"records": sum(g["backlog"][s]["records"] for g in gws),
                            "bytes": sum(g["backlog"][s]["bytes"] for g in gws)} for s in STREAMS},
            "oldest_age_s": max((g["backlog"][s]["oldest_age_s"] for g in gws for s in STREAMS), default=0.0),
        })
    return out

"""The operator API's fleet routes, mounted by ``cloud.api.create_app`` under ``/v1`` behind the bearer token.

    GET  /v1/fleet/devices?where=Q        {"devices": [view...]} (``cloud.fleet.views.device_views``), filtered
    POST /v1/devices/{id}/tags            {"add": [...], "remove": [...]} -> {"device_id", "tags"}
    POST /v1/devices/{id}/state           {"state", "reason", "by"} -> the history row; 409 if the table forbids it
    GET  /v1/devices/{id}/history         {"history": [...]} every lifecycle transition, oldest first
    GET  /v1/devices/{id}/logs            {"logs": [...]} log lines the device sent (kind "log" records)
    GET  /v1/ghosts?silent_s=S            {"ghosts": [...], "silent_s"} devices silent longer than S
    GET  /v1/groups                       {"groups": [...]} with members (dynamic: evaluated now)
    POST /v1/groups                       {"name", "kind": "static"|"dynamic", "query"} -> 201 the group
    DELETE /v1/groups/{name}              {"deleted": name}
    POST /v1/groups/{name}/members        {"add": [...], "remove": [...]} -> {"name", "members"}
    GET  /v1/config/layers                {"layers": [...]}
    POST /v1/config/set                   {"layer": "global"|"site:S"|"group:G"|"device:D", "key", "value",
                                           "lock": bool, "unset": bool, "dry_run": bool, "by"}
                                          -> {"changed": {device: [keys]}, "refused": [...], "queued": [...]}
    GET  /v1/config/explain/{device}      {"device_id", "version", "applied_version", "keys": [...]}
    GET  /v1/config/status                {"devices": [{"device_id", "desired_version", "applied_version",
                                           "drift"}]}
    GET  /v1/metrics?device=D&site=S&since_ms&until_ms&metric=M&tier=auto|raw|minute|hour
                                          {"tier", "points": [...]}
    GET  /v1/fleet/sites                  per site: gateways and links, devices online/offline/total,
                                          firmware versions in use, open alerts, backlog bytes

Errors are ``{"error": code, "detail": message}`` like every route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import fastapi
import pydantic
from fastapi.responses import JSONResponse

from cloud.fleet import config_layers, lifecycle, query
from cloud.fleet import views as fleet
from cloud.fleet.config_push import push_configs
from cloud.store import Store
from cloud.store.telemetry import ONLINE_WITHIN_MS
from cloud.fleet.rollup import Retention, choose_tier
from common.errors import ConfigError, FleetError, QueryError, StoreError, TransitionError
from common.protocol.messages import STREAMS

__all__ = ["DEFAULT_GHOST_S", "DEFAULT_RETENTION", "ConfigSetRequest", "StateRequest", "fleet_routes", "parse_layer"]

T = TypeVar("T")
DEFAULT_GHOST_S = 7 * 24 * 3600
DEFAULT_RETENTION = Retention(raw_ms=24 * 3600_000, minute_ms=7 * 24 * 3600_000, hour_ms=90 * 24 * 3600_000)
_Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]


class _Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class TagsRequest(_Body):
    add: list[_Name] = []
    remove: list[_Name] = []


class StateRequest(_Body):
    state: str
    reason: Annotated[str, pydantic.StringConstraints(max_length=1000)] = ""
    by: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)] = "operator"


class GroupRequest(_Body):
    name: _Name
    kind: str = "static"
    query: Annotated[str, pydantic.StringConstraints(max_length=4000)] | None = None


class MembersRequest(_Body):
    add: list[str] = []
    remove: list[str] = []


class ConfigSetRequest(_Body):
    layer: str
    key: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256)]
    value: Any = None
    lock: bool = False
    unlock: bool = False
    unset: bool = False
    dry_run: bool = False
    by: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)] = "operator"


def parse_layer(text: str) -> tuple[str, str]:
    """``global``, ``site:S``, ``group:G`` or ``device:D`` -> (kind, name); ``ConfigError`` otherwise."""
    kind, sep, name = text.partition(":")
    if kind == "global" and not sep:
        return "global", ""
    if kind in ("site", "group", "device") and name:
        return kind, name
    raise ConfigError(f"config layer {text!r} is not global, site:NAME, group:NAME or device:ID")


def fleet_routes(
    store: Store,
    call: Callable[[Callable[[], T]], Awaitable[T]],
    now_ms: Callable[[], int],
    *,
    on_command: Callable[[str, int], None] | None = None,
    retention: Retention = DEFAULT_RETENTION,
    ghost_s: float = DEFAULT_GHOST_S,
) -> fastapi.APIRouter:
    """The routes; ``call`` runs a blocking store function off the loop, ``on_command`` pushes new commands."""
    router = fastapi.APIRouter()

    async def answer(fn: Callable[[], T]) -> T | JSONResponse:
        try:
            return await call(fn)
        except TransitionError as exc:
            return JSONResponse({"error": "transition_refused", "detail": str(exc)}, status_code=409)
        except FleetError as exc:
            code = 404 if str(exc).startswith("no ") else 409
            return JSONResponse({"error": "not_found" if code == 404 else "conflict", "detail": str(exc)}, code)
        except (ConfigError, QueryError) as exc:
            return JSONResponse({"error": "invalid_request", "detail": str(exc)}, status_code=400)
        except StoreError as exc:
            return JSONResponse({"error": "store_unavailable", "detail": str(exc)}, status_code=503)

    def pushed(made: list[tuple[str, int]]) -> None:
        if on_command is not None:
            for device_id, seq in made:
                on_command(device_id, seq)

    @router.get("/fleet/devices", response_model=None)
    async def fleet_devices(where: str | None = None) -> Any:
        def read() -> dict[str, Any]:
            node = query.parse(where) if where else None
            views = fleet.device_views(store.fleet.fleet_snapshot())
            if node is not None:
                views = [v for v in views if query.matches(node, fleet.query_view(v))]
            return {"devices": views}

        return await answer(read)

    @router.post("/devices/{device_id:path}/tags", response_model=None)
    async def tags(device_id: str, body: TagsRequest) -> Any:
        return await answer(lambda: {"device_id": device_id, "tags": store.fleet.change_tags(device_id, body.add, body.remove)})

    @router.post("/devices/{device_id:path}/state", response_model=None)
    async def set_state(device_id: str, body: StateRequest) -> Any:
        now = now_ms()
        return await answer(lambda: lifecycle.set_state(store.fleet, device_id, body.state, body.by, body.reason, now))

    @router.get("/devices/{device_id:path}/history", response_model=None)
    async def history(device_id: str) -> Any:
        return await answer(lambda: {"history": store.fleet.lifecycle_history(device_id)})

    @router.get("/devices/{device_id:path}/logs", response_model=None)
    async def logs(device_id: str, after_ms: int = 0) -> Any:
        def read() -> dict[str, Any]:
            rows = [r for r in store.telemetry.records_of_kind("log", device_id) if r["ts_ms"] >= after_ms]
            return {"logs": rows}

        return await answer(read)

    @router.get("/ghosts", response_model=None)
    async def ghosts(silent_s: float | None = None) -> Any:
        seconds = ghost_s if silent_s is None else silent_s
        now = now_ms()
        return await answer(lambda: {"silent_s": seconds, "ghosts": store.fleet.ghosts(int(seconds * 1000), now)})

    @router.get("/groups", response_model=None)
    async def list_groups() -> Any:
        def read() -> dict[str, Any]:
            rows = store.fleet.list_groups()
            dynamic = fleet.dynamic_members(store.fleet.fleet_snapshot())
            for row in rows:
                if row["kind"] == "dynamic":
                    row["members"] = dynamic.get(row["name"], [])
            return {"groups": rows}

        return await answer(read)

    @router.post("/groups", status_code=201, response_model=None)
    async def create_group(body: GroupRequest) -> Any:
        def make() -> dict[str, Any]:
            if body.query:
                query.parse(body.query)  # QueryError (400, with the position) before anything is saved
            return store.fleet.create_group(body.name, body.kind, body.query, now_ms())

        return await answer(make)

    @router.delete("/groups/{name}", response_model=None)
    async def delete_group(name: str) -> Any:
        def delete() -> dict[str, Any]:
            if not store.fleet.delete_group(name):
                raise FleetError(f"no group by the name of {name!r} (`edgefleet groups list` shows them)")
            return {"deleted": name}

        return await answer(delete)

    @router.post("/groups/{name}/members", response_model=None)
    async def members(name: str, body: MembersRequest) -> Any:
        return await answer(lambda: {"name": name, "members": store.fleet.change_members(name, body.add, body.remove)})

    @router.get("/config/layers", response_model=None)
    async def layers() -> Any:
        return await answer(lambda: {"layers": store.fleet.layers()})

    @router.post("/config/set", response_model=None)
    async def config_set(body: ConfigSetRequest) -> Any:
        now = now_ms()

        def run() -> dict[str, Any]:
            kind, name = parse_layer(body.layer)
            docs = store.fleet.layers()
            old = next((d for d in docs if (d["kind"], d["name"]) == (kind, name)), None)
            layer = config_layers.Layer(kind, name, (old or {}).get("values") or {}, frozenset((old or {}).get("locked") or ()))
            if body.unset:
                layer = config_layers.Layer(kind, name, {k: v for k, v in layer.values.items()
                                                         if not (k == body.key or k.startswith(body.key + "."))},
                                            layer.locked)
            else:
                layer = layer.set(body.key, body.value)
            locked = set(layer.locked)
            if body.lock:
                locked.add(body.key)
            if body.unlock:
                locked.discard(body.key)
            new_doc = {"kind": kind, "name": name, "values": dict(layer.values), "locked": sorted(locked)}
            new_docs = [d for d in docs if (d["kind"], d["name"]) != (kind, name)] + [new_doc]
            snap = store.fleet.fleet_snapshot()
            views = fleet.device_views(snap)
            before = fleet.desired_configs(snap, docs, views)
            after = fleet.desired_configs(snap, new_docs, views)
            changed = config_layers.changed_devices(before, after)
            refused = sorted({(r.key, r.layer, r.locked_by) for res in after.values() for r in res.refused
                              if r.layer == config_layers.Layer(kind, name).label})
            out: dict[str, Any] = {
                "layer": body.layer, "key": body.key, "dry_run": body.dry_run, "changed": changed,
                "refused": [{"key": k, "layer": lay, "locked_by": by} for k, lay, by in refused],
                "queued": [], "problems": [],
            }
            if body.dry_run:
                return out
            store.fleet.put_layer(kind, name, new_doc["values"], new_doc["locked"], body.by, now)
            made, problems = push_configs(store.fleet, store.commands, now)
            out["queued"] = [{"device_id": d, "seq": s} for d, s in made]
            out["problems"] = problems
            return out

        result = await answer(run)
        if isinstance(result, dict):
            pushed([(q["device_id"], q["seq"]) for q in result["queued"]])
        return result

    @router.get("/config/explain/{device_id:path}", response_model=None)
    async def explain(device_id: str) -> Any:
        def read() -> dict[str, Any]:
            snap = store.fleet.fleet_snapshot()
            views = {v["device_id"]: v for v in fleet.device_views(snap)}
            if device_id not in views:
                raise FleetError(f"no device by the id of {device_id!r} (`edgefleet devices list` shows the known ones)")
            resolved = config_layers.merge(fleet.device_layers(views[device_id], store.fleet.layers()))
            rows = [r._asdict() | {"refused": list(r.refused)} for r in config_layers.explain(resolved)]
            cfg = views[device_id]["config"]
            return {"device_id": device_id, "version": resolved.version, "applied_version": cfg["applied_version"],
                    "drift": cfg["applied_version"] != resolved.version if cfg["desired_version"] else False,
                    "keys": rows}

        return await answer(read)

    @router.get("/config/status", response_model=None)
    async def config_status() -> Any:
        def read() -> dict[str, Any]:
            views = fleet.device_views(store.fleet.fleet_snapshot())
            return {"devices": [{"device_id": v["device_id"], **v["config"]} for v in views]}

        return await answer(read)

    @router.get("/metrics", response_model=None)
    async def metrics(
        device: str | None = None,
        site: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        metric: str | None = None,
        tier: str = "auto",
    ) -> Any:
        now = now_ms()
        since = since_ms if since_ms is not None else now - 3600_000
        until = until_ms if until_ms is not None else now + 1

        def read() -> dict[str, Any]:
            if tier not in ("auto", "raw", "minute", "hour"):
                raise ConfigError(f"tier {tier!r} is not one of auto, raw, minute, hour")
            if device is None and site is None:
                raise ConfigError("name a device (device=ID) or a site (site=NAME)")
            chosen = choose_tier(since, now, retention) if tier == "auto" else tier
            ids = [device] if device is not None else [
                d["device_id"] for d in store.telemetry.list_devices() if d["site_id"] == site
            ]
            return {"tier": chosen, "since_ms": since, "until_ms": until,
                    "points": store.metrics.metric_series(ids, since, until, chosen, metric=metric)}

        return await answer(read)

    @router.get("/fleet/sites", response_model=None)
    async def fleet_sites() -> Any:
        now = now_ms()

        def read() -> dict[str, Any]:
            snap = store.fleet.fleet_snapshot()
            sites = store.telemetry.list_sites()
            statuses = store.fleet.gateway_statuses()
            open_alerts = store.alerts.list_alerts("open", limit=10_000)
            return {"sites": site_overview(sites, snap, statuses, open_alerts, now)}

        return await answer(read)

    return router


def site_overview(
    sites: list[dict[str, Any]],
    snap: dict[str, Any],
    statuses: list[dict[str, Any]],
    open_alerts: list[dict[str, Any]],
    now_ms: int,
    online_within_ms: int = ONLINE_WITHIN_MS,
) -> list[dict[str, Any]]:
    """Per site: gateways (id, link, backlog bytes), devices online/offline/total, firmware versions in use
    (version -> devices), open alerts about its devices and gateways, total backlog bytes."""
    out = []
    for site in sites:
        sid = site["site_id"]
        devs = [d for d in snap["devices"] if d["site_id"] == sid and d.get("state") != "retired"]
        online = sum(1 for d in devs if d["last_seen_ms"] >= now_ms - online_within_ms)
        firmware: dict[str, int] = {}
        for d in devs:
            version = snap["inventory"].get(d["device_id"], {}).get(fleet.FIRMWARE_ATTR)
            if version is not None:
                firmware[str(version)] = firmware.get(str(version), 0) + 1
        gws = []
        for g in statuses:
            if g["site_id"] != sid:
                continue
            status = g["status"] or {}
            backlog = sum(int(status.get(f"backlog.{s}.bytes", 0) or 0) for s in STREAMS)
            gws.append({"gateway_id": g["gateway_id"], "link": status.get("link"), "backlog_bytes": backlog,
                        "last_seen_ms": g["last_seen_ms"]})
        subjects = {d["device_id"] for d in devs} | {g["gateway_id"] for g in gws}
        out.append({
            "site_id": sid,
            "gateways": gws,
            "devices": {"total": len(devs), "online": online, "offline": len(devs) - online},
            "firmware": dict(sorted(firmware.items())),
            "open_alerts": sum(1 for a in open_alerts if a["subject"] in subjects),
            "backlog_bytes": sum(g["backlog_bytes"] for g in gws),
        })
    return out

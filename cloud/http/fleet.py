"""The operator API's fleet routes (mounted under ``/v1``, behind the token).

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

The work is the fleet feature's (``cloud.fleet``: views, lifecycle, config changes, rollup tiers);
these routes parse, run it on the store thread and answer. Errors go to the one handler. Lists are
paged (``limit``, ``cursor``; ``next_cursor`` in the answer: ``cloud.http.paging``).
"""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
import pydantic

from cloud.fleet import lifecycle, query
from cloud.fleet.config_change import ConfigChange, change_config, explain_config
from cloud.fleet.rollup import choose_tier
from cloud.fleet.views import device_views, dynamic_members, query_view, site_overview
from cloud.http.context import ApiContext
from cloud.http.models.fleet import (
    ConfigExplain,
    ConfigSetResult,
    ConfigStatusPage,
    DeletedBody,
    FleetDevicesPage,
    FleetSitesPage,
    GhostsPage,
    GroupRow,
    GroupsPage,
    HistoryPage,
    HistoryRow,
    LayersPage,
    LogsPage,
    MembersBody,
    MetricsPage,
    TagsBody,
)
from cloud.http.paging import DEFAULT_LIMIT, Cursor, Limit, paginate
from cloud.http.scope import site_scope
from common.errors import ConfigError, FleetNotFound

__all__ = ["ConfigSetRequest", "StateRequest", "routes"]

MAX_MS = 10**15  # a time in ms (year 33658): larger is a typo, refused before it reaches the store
MAX_POINTS = 100_000  # metric points in one page

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


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    router = fastapi.APIRouter()
    store = ctx.store
    fleet = store.fleet

    @router.get("/fleet/devices", response_model=FleetDevicesPage)
    async def fleet_devices(request: fastapi.Request, where: str | None = None, site: str | None = None,
                            limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        node = query.parse(where) if where else None
        scope = await site_scope(request, ctx)

        def read() -> dict[str, Any]:
            views = scope.keep(device_views(fleet.fleet_snapshot()), lambda v: v["site_id"])
            if site is not None:
                views = [v for v in views if v["site_id"] == site]
            if node is not None:
                views = [v for v in views if query.matches(node, query_view(v))]
            page, nxt = paginate(views, key=lambda v: (v["device_id"],), limit=limit, cursor=cursor)
            return {"devices": page, "next_cursor": nxt}

        return await ctx.call(read)

    @router.post("/devices/{device_id:path}/tags", response_model=TagsBody)
    async def tags(device_id: str, body: TagsRequest) -> dict[str, Any]:
        return {"device_id": device_id, "tags": await ctx.call(lambda: fleet.change_tags(device_id, body.add, body.remove))}

    @router.post("/devices/{device_id:path}/state", response_model=HistoryRow)
    async def set_state(device_id: str, body: StateRequest) -> dict[str, Any]:
        now = ctx.now_ms()
        return await ctx.call(lambda: lifecycle.set_state(fleet, device_id, body.state, body.by, body.reason, now))

    @router.get("/devices/{device_id:path}/history", response_model=HistoryPage)
    async def history(device_id: str, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        rows = await ctx.call(lambda: fleet.lifecycle_history(device_id))
        page, nxt = paginate(rows, key=None, limit=limit, cursor=cursor)
        return {"history": page, "next_cursor": nxt}

    @router.get("/devices/{device_id:path}/logs", response_model=LogsPage)
    async def logs(device_id: str, after_ms: int = 0, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        rows = await ctx.call(lambda: store.telemetry.records_of_kind("log", device_id))
        page, nxt = paginate([r for r in rows if r["ts_ms"] >= after_ms], key=lambda r: (r["ts_ms"], r["stream"], r["seq"]),
                             limit=limit, cursor=cursor)
        return {"logs": page, "next_cursor": nxt}

    @router.get("/ghosts", response_model=GhostsPage)
    async def ghosts(request: fastapi.Request,
                     silent_s: Annotated[float, fastapi.Query(ge=0, le=10 * 366 * 86400)] | None = None,
                     limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        seconds = ctx.fleet.ghost_s if silent_s is None else silent_s
        now = ctx.now_ms()
        scope = await site_scope(request, ctx)
        rows = scope.keep(await ctx.call(lambda: fleet.ghosts(int(seconds * 1000), now)), lambda r: r["site_id"])
        page, nxt = paginate(rows, key=None, limit=limit, cursor=cursor)
        return {"silent_s": seconds, "ghosts": page, "next_cursor": nxt}

    @router.get("/groups", response_model=GroupsPage)
    async def list_groups(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            rows = fleet.list_groups()
            dynamic = dynamic_members(fleet.fleet_snapshot())
            for row in rows:
                if row["kind"] == "dynamic":
                    row["members"] = dynamic.get(row["name"], [])
            page, nxt = paginate(rows, key=lambda r: (r["name"],), limit=limit, cursor=cursor)
            return {"groups": page, "next_cursor": nxt}

        return await ctx.call(read)

    @router.post("/groups", status_code=201, response_model=GroupRow)
    async def create_group(body: GroupRequest) -> dict[str, Any]:
        if body.query:
            query.parse(body.query)  # QueryError (400, with the position) before anything is saved
        now = ctx.now_ms()
        return await ctx.call(lambda: fleet.create_group(body.name, body.kind, body.query, now))

    @router.delete("/groups/{name}", response_model=DeletedBody)
    async def delete_group(name: str) -> dict[str, Any]:
        if not await ctx.call(lambda: fleet.delete_group(name)):
            raise FleetNotFound(f"no group by the name of {name!r} (`edgefleet groups list` shows them)")
        return {"deleted": name}

    @router.post("/groups/{name}/members", response_model=MembersBody)
    async def members(name: str, body: MembersRequest) -> dict[str, Any]:
        return {"name": name, "members": await ctx.call(lambda: fleet.change_members(name, body.add, body.remove))}

    @router.get("/config/layers", response_model=LayersPage)
    async def layers(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        rows = await ctx.call(fleet.layers)
        page, nxt = paginate(rows, key=lambda r: (r["kind"], r["name"]), limit=limit, cursor=cursor)
        return {"layers": page, "next_cursor": nxt}

    @router.post("/config/set", response_model=ConfigSetResult)
    async def config_set(body: ConfigSetRequest) -> dict[str, Any]:
        change = ConfigChange(**body.model_dump())
        now = ctx.now_ms()
        out = await ctx.call(lambda: change_config(fleet, store.commands, change, now))
        ctx.commanded([(q["device_id"], q["seq"]) for q in out["queued"]])
        return out

    @router.get("/config/explain/{device_id:path}", response_model=ConfigExplain)
    async def explain(device_id: str) -> dict[str, Any]:
        return await ctx.call(lambda: explain_config(fleet, device_id))

    @router.get("/config/status", response_model=ConfigStatusPage)
    async def config_status(request: fastapi.Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        scope = await site_scope(request, ctx)
        views = scope.keep(await ctx.call(lambda: device_views(fleet.fleet_snapshot())), lambda v: v["site_id"])
        rows = [{"device_id": v["device_id"], **v["config"]} for v in views]
        page, nxt = paginate(rows, key=lambda r: (r["device_id"],), limit=limit, cursor=cursor)
        return {"devices": page, "next_cursor": nxt}

    @router.get("/metrics", response_model=MetricsPage)
    async def metrics(
        device: str | None = None,
        site: str | None = None,
        since_ms: Annotated[int, fastapi.Query(ge=0, le=MAX_MS)] | None = None,
        until_ms: Annotated[int, fastapi.Query(ge=0, le=MAX_MS)] | None = None,
        metric: str | None = None,
        tier: str = "auto",
        limit: Annotated[int, fastapi.Query(ge=1, le=MAX_POINTS)] = MAX_POINTS,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        now = ctx.now_ms()
        since = since_ms if since_ms is not None else now - 3600_000
        until = until_ms if until_ms is not None else now + 1
        if tier not in ("auto", "raw", "minute", "hour"):
            raise ConfigError(f"tier {tier!r} is not one of auto, raw, minute, hour")
        if device is None and site is None:
            raise ConfigError("name a device (device=ID) or a site (site=NAME)")
        chosen = choose_tier(since, now, ctx.fleet.retention) if tier == "auto" else tier

        def read() -> dict[str, Any]:
            ids = [device] if device is not None else [
                d["device_id"] for d in store.telemetry.list_devices() if d["site_id"] == site
            ]
            points = store.metrics.metric_series(ids, since, until, chosen, metric=metric)
            page, nxt = paginate(points, key=lambda p: (p["device_id"], p["metric"], p["ts_ms"]), limit=limit,
                                 cursor=cursor)
            return {"tier": chosen, "since_ms": since, "until_ms": until, "points": page, "next_cursor": nxt}

        return await ctx.call(read)

    @router.get("/fleet/sites", response_model=FleetSitesPage)
    async def fleet_sites(request: fastapi.Request, site: str | None = None, limit: Limit = DEFAULT_LIMIT,
                          cursor: Cursor = None) -> dict[str, Any]:
        now = ctx.now_ms()
        scope = await site_scope(request, ctx)

        def read() -> dict[str, Any]:
            snap = fleet.fleet_snapshot()
            sites = scope.keep(store.telemetry.list_sites(), lambda r: r["site_id"])
            statuses = fleet.gateway_statuses()
            open_alerts = store.alerts.list_alerts("open", limit=10_000)
            rows = site_overview([s for s in sites if site is None or s["site_id"] == site], snap, statuses, open_alerts, now)
            page, nxt = paginate(rows, key=lambda r: (r["site_id"],), limit=limit, cursor=cursor)
            return {"sites": page, "next_cursor": nxt}

        return await ctx.call(read)

    return router

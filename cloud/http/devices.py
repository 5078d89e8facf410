"""The operator API's routes on devices, sites and what they sent (mounted under ``/v1``, behind the token).

    GET  /v1/devices?where=Q&site=S       {"devices": [...]}   every device, or those matching the query (and site)
    GET  /v1/sites                        {"sites": [...]}
    GET  /v1/sites/{site}                 one site's health (gateways with status and inventory, devices online, gaps)
    GET  /v1/telemetry/summary            rows, distinct keys, duplicates stored, per device and stream
    GET  /v1/updates?device=D             {"updates": [...]} update outcomes reported by devices
    GET  /v1/gaps?device=D&site=S         {"gaps": [...], "totals": [...]}, with a device also
                                          "missing": {stream: [[first, last]...]} (unexplained gaps)
    POST /v1/devices/{device}/commands    {"name", "args": {k: v}, "ttl_s"} -> 201 {"device_id", "seq", "expires_ms"}
    GET  /v1/devices/{device}/commands    {"commands": [...]}

Lists are paged (``limit``, ``cursor``; ``next_cursor`` in the answer: ``cloud.http.paging``).
An unknown device or site is a 404 (``NotFound``); after a command is stored the cloud is told
(``ApiContext.commanded``) so it goes to the device's gateway at once.
"""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
import pydantic

from cloud.fleet import query
from cloud.fleet.views import device_views, query_view
from cloud.http.context import ApiContext
from cloud.http.models.fleet import (
    CommandCreated,
    CommandsPage,
    DevicesPage,
    GapsBody,
    SiteDetail,
    SitesPage,
    TelemetrySummary,
    UpdatesPage,
)
from cloud.http.paging import DEFAULT_LIMIT, Cursor, Limit, paginate
from cloud.http.scope import site_scope
from common.errors import NotFound
from common.protocol.codec import MAX_STR, MAX_VALUES
from common.protocol.messages import STREAMS

__all__ = ["MAX_TTL_S", "CommandRequest", "routes"]

MAX_TTL_S = 366 * 24 * 3600  # a command's time to live is at most a year

_WireStr = Annotated[str, pydantic.StringConstraints(max_length=MAX_STR)]  # what the wire's Command can carry


class CommandRequest(pydantic.BaseModel):
    """The body of POST /v1/devices/{device}/commands."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=MAX_STR)]
    args: Annotated[dict[_WireStr, _WireStr], pydantic.Field(max_length=MAX_VALUES)] = {}
    ttl_s: Annotated[int, pydantic.Field(gt=0, le=MAX_TTL_S)] = 3600


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    router = fastapi.APIRouter()
    telemetry, commands = ctx.store.telemetry, ctx.store.commands

    async def known_device(device_id: str) -> None:
        if await ctx.call(lambda: telemetry.device_gateway(device_id)) is None:
            raise NotFound(
                f"No device by the id of {device_id!r} was found (`edgefleet devices list` shows the known ones)"
            )

    @router.get("/devices", response_model=DevicesPage)
    async def devices(request: fastapi.Request, where: str | None = None, site: str | None = None,
                      limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        """Every device (of the caller's sites), or those matching ``where`` (the query language of
        ``cloud.fleet.query``) and ``site``."""
        node = query.parse(where) if where else None  # QueryError: 400 with the position
        scope = await site_scope(request, ctx)
        rows = scope.keep(await ctx.call(telemetry.list_devices), lambda r: r["site_id"])
        if site is not None:
            rows = [r for r in rows if r["site_id"] == site]
        if node is not None:
            # tags, groups, lifecycle state and inventory come from the fleet view (cloud.fleet.views)
            views = await ctx.call(lambda: device_views(ctx.store.fleet.fleet_snapshot()))
            matched = {v["device_id"] for v in views if query.matches(node, query_view(v))}
            rows = [r for r in rows if r["device_id"] in matched]
        page, nxt = paginate(rows, key=lambda r: (r["device_id"],), limit=limit, cursor=cursor)
        return {"devices": page, "next_cursor": nxt}

    @router.get("/sites", response_model=SitesPage)
    async def sites(request: fastapi.Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        scope = await site_scope(request, ctx)
        rows = scope.keep(await ctx.call(telemetry.list_sites), lambda r: r["site_id"])
        page, nxt = paginate(rows, key=lambda r: (r["site_id"],), limit=limit, cursor=cursor)
        return {"sites": page, "next_cursor": nxt}

    @router.get("/sites/{site:path}", response_model=SiteDetail)
    async def site_detail(site: str) -> dict[str, Any]:
        now = ctx.now_ms()

        def read() -> dict[str, Any] | None:
            found = telemetry.site_detail(site, now)
            if found is not None:  # each gateway's own inventory (host, site cache), as it last reported it
                reported = ctx.store.fleet.inventory()
                for g in found["gateways"]:
                    g["inventory"] = (reported.get(g["gateway_id"]) or {}).get("attrs")
            return found

        detail = await ctx.call(read)
        if detail is None:
            raise NotFound(f"No site by the id of {site!r} was found (`edgefleet sites list` shows the known ones)")
        return detail

    @router.get("/telemetry/summary", response_model=TelemetrySummary)
    async def telemetry_summary(request: fastapi.Request, limit: Limit = DEFAULT_LIMIT,
                                cursor: Cursor = None) -> dict[str, Any]:
        scope = await site_scope(request, ctx, ids=True)
        body = await ctx.call(telemetry.telemetry_summary)
        if not scope.everything:  # the totals of the caller's devices only
            body["devices"] = scope.keep_ids(body["devices"], lambda r: r["device_id"])
            body["rows"] = body["distinct"] = sum(r["count"] for r in body["devices"])
        body["devices"], body["next_cursor"] = paginate(body["devices"], key=lambda r: (r["device_id"], r["stream"]),
                                                        limit=limit, cursor=cursor)
        return body

    @router.get("/gaps", response_model=GapsBody, response_model_exclude_unset=True)
    async def gaps(request: fastapi.Request, device: str | None = None, site: str | None = None,
                   limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        scope = await site_scope(request, ctx, ids=True)  # a device or site named was checked by cloud.http.access

        def read() -> dict[str, Any]:
            mine = scope.keep_ids(telemetry.gaps(device, site), lambda r: r["device_id"])
            rows, nxt = paginate(mine, key=None, limit=limit, cursor=cursor)
            totals = scope.keep_ids(telemetry.gap_totals(device, site), lambda r: r["device_id"])
            body: dict[str, Any] = {"gaps": rows, "totals": totals, "next_cursor": nxt}
            if device is not None:
                missing = {stream: telemetry.missing_ranges(device, stream) for stream in STREAMS}
                body["missing"] = {stream: [list(r) for r in ranges] for stream, ranges in missing.items() if ranges}
            return body

        return await ctx.call(read)

    @router.get("/updates", response_model=UpdatesPage)
    async def updates(request: fastapi.Request, device: str | None = None, limit: Limit = DEFAULT_LIMIT,
                      cursor: Cursor = None) -> dict[str, Any]:
        """Update outcomes the devices (of the caller's sites) reported (committed, rolled_back, failed, with the reason)."""
        scope = await site_scope(request, ctx, ids=True)
        rows = scope.keep_ids(await ctx.call(lambda: telemetry.records_of_kind("update", device)), lambda r: r["device_id"])
        page, nxt = paginate(rows, key=None, limit=limit, cursor=cursor)
        return {"updates": page, "next_cursor": nxt}

    @router.post("/devices/{device_id:path}/commands", status_code=201, response_model=CommandCreated)
    async def create_command(device_id: str, body: CommandRequest) -> dict[str, Any]:
        await known_device(device_id)
        now = ctx.now_ms()
        expires_ms = now + body.ttl_s * 1000
        seq = await ctx.call(lambda: commands.create_command(device_id, body.name, body.args, expires_ms, now))
        ctx.commanded([(device_id, seq)])
        return {"device_id": device_id, "seq": seq, "expires_ms": expires_ms}

    @router.get("/devices/{device_id:path}/commands", response_model=CommandsPage)
    async def list_commands(device_id: str, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        await known_device(device_id)
        rows = await ctx.call(lambda: commands.list_commands(device_id))
        page, nxt = paginate(rows, key=lambda r: (r["seq"],), limit=limit, cursor=cursor)
        return {"commands": page, "next_cursor": nxt}

    return router

"""Console pages of the fleet: overview, devices (the query language as the filter), one device, one site.

    GET  /                      sites at a glance, live (uplink, backlog per stream, oldest record, devices
                                online/offline, open alerts, firmware mix)
    GET  /devices?q=&cursor=    devices matching the query, paged (tags, groups, state, version, last seen)
    GET  /devices/{id}          inventory, metric charts, updates, commands, config with provenance, gaps, logs
    POST /devices/{id}/ping     a ping command (``devices.command``), as ``edgefleet devices ping``
    GET  /sites/{site}          gateways (link, backlog, status), link history (uplink alerts), devices
"""

from __future__ import annotations

import json
from typing import Any

import fastapi
from fastapi.responses import Response

from cloud.console.charts import series, svg_chart
from cloud.console.views import Page, quoted, view
from common.errors import ApiError

__all__ = ["PAGE_SIZE", "routes"]

PAGE_SIZE = 50
CHART_WINDOW_MS = 3600_000


def _page(request: fastapi.Request) -> Page:
    return request.state.page


def routes() -> fastapi.APIRouter:
    router = fastapi.APIRouter(include_in_schema=False)

    @view(router, "GET", "/", action="sites.list", site="scope")
    async def overview(request: fastapi.Request) -> Response:
        p = _page(request)
        rows = (await p.get("/v1/fleet/sites"))["sites"]
        allowed = p.sites()
        sites = [r for r in rows if allowed is None or r["site_id"] in allowed]
        template = "overview_sites.html" if request.headers.get("hx-request") else "overview.html"
        return p.render(template, sites=sites)

    @view(router, "GET", "/devices", action="devices.list", site="scope")
    async def devices(request: fastapi.Request, q: str = "", cursor: str | None = None) -> Response:
        p = _page(request)
        problem = ""
        rows: list[dict[str, Any]] = []
        nxt = None
        try:
            body = await p.get("/v1/fleet/devices", where=q or None, limit=PAGE_SIZE, cursor=cursor,
                               site=p.site if p.scoped else None)
            rows, nxt = body["devices"], body["next_cursor"]
        except ApiError as exc:
            if exc.status not in (400, 422):
                raise
            problem = str(exc)  # a query that does not parse: shown under the box, with the caret
        return p.render("devices.html", devices=rows, q=q, next_cursor=nxt, problem=problem, cursor=cursor)

    @view(router, "GET", "/devices/{device_id}", action="devices.show", site="device")
    async def device(request: fastapi.Request, device_id: str) -> Response:
        p = _page(request)
        d = p.found
        now = p.console.now_ms()
        metrics = await p.get("/v1/metrics", device=device_id, since_ms=now - CHART_WINDOW_MS, until_ms=now + 1,
                              site=p.site)
        charts = [(name, svg_chart(pairs, name=name)) for name, pairs in series(metrics["points"]).items()]
        updates = (await p.get("/v1/updates", device=device_id, site=p.site))["updates"]
        commands = (await p.get(f"/v1/devices/{quoted(device_id)}/commands", site=p.site))["commands"]
        config = await p.get(f"/v1/config/explain/{quoted(device_id)}", site=p.site)
        gaps = await p.get("/v1/gaps", device=device_id, site=p.site)
        logs = (await p.get(f"/v1/devices/{quoted(device_id)}/logs", site=p.site))["logs"][-20:]
        history = (await p.get(f"/v1/devices/{quoted(device_id)}/history", site=p.site))["history"]
        return p.render("device.html", d=d, charts=charts, tier=metrics["tier"], updates=updates[-20:][::-1],
                        commands=commands[-20:][::-1], config=config, gaps=gaps, logs=logs, history=history)

    @view(router, "POST", "/devices/{device_id}/ping", action="devices.command", site="device")
    async def ping(request: fastapi.Request, device_id: str) -> Response:
        p = _page(request)
        await p.post(f"/v1/devices/{quoted(device_id)}/commands", {"name": "ping", "args": {}, "ttl_s": 300})
        return p.redirect(f"/devices/{quoted(device_id)}#commands")

    @view(router, "GET", "/sites/{site}", action="sites.list", site="path")
    async def site(request: fastapi.Request, site: str) -> Response:
        p = _page(request)
        detail = await p.get(f"/v1/sites/{quoted(site)}", site=site)
        devices = (await p.get("/v1/fleet/devices", site=site, limit=500))["devices"]
        gateways = {g["gateway_id"] for g in detail["gateways"]}
        links = []
        for gw in sorted(gateways):  # the uplink's history: its alerts (raised and resolved), newest first
            links += (await p.get("/v1/alerts", state="all", subject=gw, limit=50, site=site))["alerts"]
        links.sort(key=lambda a: a["opened_ms"], reverse=True)
        return p.render("site.html", detail=detail, devices=devices, links=links)

    return router


def device_query(device_id: str) -> str:
    """The query that names one device (the device view's ``where``)."""
    return f"id = {json.dumps(device_id)}"



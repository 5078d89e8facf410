"""Console pages of operations: the enrollment queue, releases, alerts, the audit log.

    GET  /enrollment                     pending (and rejected) devices of the site(s)
    POST /enrollment/{id}/approve|reject as `edgefleet devices approve` (``devices.approve``)
    GET  /releases                       versions, hardware, sizes, deltas made, signatures
    GET  /alerts?state=open|acknowledged|resolved|silenced   live
    POST /alerts/{id}/ack                as `edgefleet alerts ack` (``alerts.ack``)
    POST /alerts/silence                 as `edgefleet alerts silence` (``alerts.silence``)
    GET  /audit?action=&who=&cursor=     the audit log, newest first, paged, filtered, its chain verified
"""

from __future__ import annotations

import fastapi
from fastapi.responses import Response

from cloud.console.views import Page, quoted, view
from common.errors import ConfigError

__all__ = ["ALERT_TABS", "routes"]

ALERT_TABS = ("open", "acknowledged", "resolved", "silenced")
AUDIT_PAGE = 50


def _page(request: fastapi.Request) -> Page:
    return request.state.page


def routes() -> fastapi.APIRouter:
    router = fastapi.APIRouter(include_in_schema=False)

    @view(router, "GET", "/enrollment", action="devices.list", site="scope")
    async def enrollment(request: fastapi.Request) -> Response:
        p = _page(request)
        rows = (await p.get("/v1/identities", site=p.site))["identities"]
        allowed = p.sites()
        rows = [r for r in rows if allowed is None or r["site"] in allowed]
        waiting = [r for r in rows if r["status"] in ("pending", "rejected")]
        enrolled = sum(1 for r in rows if r["status"] == "enrolled")
        return p.render("enrollment.html", waiting=waiting, enrolled=enrolled)

    @view(router, "POST", "/enrollment/{device_id}/approve", action="devices.approve", site="identity")
    async def approve(request: fastapi.Request, device_id: str) -> Response:
        p = _page(request)
        await p.post(f"/v1/devices/{quoted(device_id)}/approve")
        return p.redirect("/enrollment")

    @view(router, "POST", "/enrollment/{device_id}/reject", action="devices.approve", site="identity")
    async def reject(request: fastapi.Request, device_id: str) -> Response:
        p = _page(request)
        await p.post(f"/v1/devices/{quoted(device_id)}/reject")
        return p.redirect("/enrollment")

    @view(router, "GET", "/releases", action="devices.list", site="scope")
    async def releases(request: fastapi.Request) -> Response:
        p = _page(request)
        rows = (await p.get("/v1/releases", limit=100))["releases"]
        full = [await p.get(f"/v1/releases/{quoted(r['version'])}") for r in rows[::-1]]
        return p.render("releases.html", releases=full)

    @view(router, "GET", "/alerts", action="devices.list", site="scope")
    async def alerts(request: fastapi.Request, state: str = "open") -> Response:
        p = _page(request)
        if state not in ALERT_TABS:
            raise ConfigError(f"alert state {state!r} is not one of {', '.join(ALERT_TABS)}")
        rows, silences = [], []
        if state == "silenced":
            silences = (await p.get("/v1/silences"))["silences"]
        else:
            rows = (await p.get("/v1/alerts", state=state, limit=200))["alerts"]
            if p.scoped:  # subjects are devices and gateways: keep those of the page's site
                known = {d["device_id"] for d in (await p.get("/v1/devices", site=p.site))["devices"]}
                known |= {g["gateway_id"] for g in (await p.get(f"/v1/sites/{quoted(p.site or '')}", site=p.site))["gateways"]}
                rows = [a for a in rows if a["subject"] in known]
        template = "alerts_table.html" if request.headers.get("hx-request") else "alerts.html"
        return p.render(template, alerts=rows, silences=silences, state=state, tabs=ALERT_TABS)

    @view(router, "POST", "/alerts/{alert_id}/ack", action="alerts.ack")
    async def ack(request: fastapi.Request, alert_id: str) -> Response:
        p = _page(request)
        await p.post(f"/v1/alerts/{quoted(alert_id)}/ack", {"by": p.principal.name[:128]})
        return p.redirect("/alerts")

    @view(router, "POST", "/alerts/silence", action="alerts.silence")
    async def silence(request: fastapi.Request) -> Response:
        p = _page(request)
        try:
            hours = float(p.form.get("hours", "1") or "1")
        except ValueError as exc:
            raise ConfigError(f"silence for {p.form.get('hours')!r} hours: not a number") from exc
        await p.post("/v1/silences", {"target": p.form.get("target", ""), "for_s": hours * 3600,
                                      "by": p.principal.name[:128], "reason": p.form.get("reason", "")[:1000]})
        return p.redirect("/alerts?state=silenced")

    @view(router, "GET", "/audit", action="audit.read")
    async def audit(request: fastapi.Request, action: str = "", who: str = "", cursor: str | None = None) -> Response:
        p = _page(request)
        body = await p.get("/v1/audit", newest_first="true", limit=AUDIT_PAGE, cursor=cursor,
                           action=action or None, who=who or None)
        return p.render("audit.html", log=body, action=action, who=who, cursor=cursor)

    return router

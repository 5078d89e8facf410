"""The operator API's alert routes (mounted under ``/v1``, behind the token).

    GET  /v1/alerts?state=open|resolved|all&subject=S&limit=N&cursor=C   {"alerts": [...], "next_cursor"} newest first
    POST /v1/alerts/{id}/ack              {"by": NAME} (optional) -> the alert; 404 for an unknown id
    POST /v1/silences                     {"target", "until_ms" | "for_s", "by", "reason"} -> 201 the silence;
                                          ``target`` is a rule name or a subject
    GET  /v1/silences                     {"silences": [...]} those still running

After a silence is stored the alert engine is told (``ApiHooks.on_silence``), so it holds
back the target's events at once.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import fastapi
import pydantic

from cloud.http.context import ApiContext
from cloud.http.errors import invalid
from cloud.http.models.operations import AlertRow, AlertsPage, SilenceRow, SilencesPage
from cloud.http.paging import DEFAULT_LIMIT, Cursor, Limit, paginate
from cloud.http.scope import site_scope
from common.errors import EdgeFleetError, NotFound

__all__ = ["MAX_SILENCE_S", "AckRequest", "SilenceRequest", "routes"]

MAX_SILENCE_S = 366 * 24 * 3600  # a silence lasts at most a year

log = logging.getLogger("edgefleet.api")

_Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]


class AckRequest(pydantic.BaseModel):
    """The body of POST /v1/alerts/{id}/ack (may be empty)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    by: _Name = "operator"


class SilenceRequest(pydantic.BaseModel):
    """The body of POST /v1/silences: exactly one of ``until_ms`` and ``for_s``."""

    model_config = pydantic.ConfigDict(extra="forbid")

    target: _Name
    until_ms: Annotated[int, pydantic.Field(gt=0)] | None = None
    for_s: Annotated[float, pydantic.Field(gt=0, le=MAX_SILENCE_S)] | None = None
    by: _Name = "operator"
    reason: Annotated[str, pydantic.StringConstraints(max_length=1000)] = ""

    @pydantic.model_validator(mode="after")
    def _one_end(self) -> SilenceRequest:
        if (self.until_ms is None) == (self.for_s is None):
            raise ValueError("give exactly one of until_ms and for_s")
        return self


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    router = fastapi.APIRouter()
    alerts = ctx.store.alerts

    @router.get("/alerts", response_model=AlertsPage)
    async def list_alerts(
        request: fastapi.Request,
        state: Literal["open", "resolved", "all", "acknowledged"] = "open",
        subject: str | None = None,
        limit: Annotated[int, fastapi.Query(ge=1, le=10_000)] = 500,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Alerts newest first (those of the caller's sites' devices and gateways); ``acknowledged``: the open
        ones someone acknowledged. ``site`` (optional, checked by ``cloud.http.access``) keeps that site's."""
        stored = "open" if state == "acknowledged" else state
        scope = await site_scope(request, ctx, ids=True)
        rows = scope.keep_ids(await ctx.call(lambda: alerts.list_alerts(stored, subject=subject, limit=10_000)),
                              lambda r: r["subject"])
        if state == "acknowledged":
            rows = [r for r in rows if r.get("acked_by")]
        page, nxt = paginate(rows, key=lambda r: (r["opened_ms"], r["id"]), limit=limit, cursor=cursor, descending=True)
        return {"alerts": page, "next_cursor": nxt}

    @router.post("/alerts/{alert_id:path}/ack", response_model=AlertRow)
    async def ack_alert(alert_id: str, body: AckRequest | None = None) -> dict[str, Any]:
        by = (body or AckRequest()).by
        now = ctx.now_ms()
        row = await ctx.call(lambda: alerts.ack_alert(alert_id, by, now))
        if row is None:
            raise NotFound(
                f"No alert by the id of {alert_id!r} was found (`edgefleet alerts list --state all` shows them)"
            )
        return row

    @router.post("/silences", status_code=201, response_model=SilenceRow)
    async def create_silence(body: SilenceRequest) -> dict[str, Any]:
        now = ctx.now_ms()
        until_ms = body.until_ms if body.until_ms is not None else now + round((body.for_s or 0) * 1000)
        if until_ms <= now:
            raise invalid("until_ms", f"until_ms {until_ms} is not in the future (now is {now})")
        if until_ms > now + MAX_SILENCE_S * 1000:
            raise invalid("until_ms", f"a silence lasts at most {MAX_SILENCE_S // 86400} days")
        row = await ctx.call(lambda: alerts.add_silence(body.target, until_ms, body.by, body.reason, now))
        if ctx.hooks.on_silence is not None:
            try:
                ctx.hooks.on_silence(body.target, until_ms)
            except (EdgeFleetError, RuntimeError):
                # the silence is committed and the engine reads it at the cloud's next start
                log.exception("applying a new silence failed", extra={"target": body.target})
        return row

    @router.get("/silences", response_model=SilencesPage)
    async def list_silences(request: fastapi.Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        """The running silences (a scoped caller's: those whose target is a device or gateway of its sites)."""
        now = ctx.now_ms()
        scope = await site_scope(request, ctx, ids=True)
        rows = scope.keep_ids(await ctx.call(lambda: alerts.active_silences(now)), lambda r: r["target"])
        page, nxt = paginate(rows, key=lambda r: (r["id"],), limit=limit, cursor=cursor)
        return {"silences": page, "next_cursor": nxt}

    return router

"""DDI devices' TargetTokens (``docs/DDI.md``): issued per device by the cloud, stored as SHA-256 only, revocable.

    POST /v1/ddi-tokens {"device_id", "site", "hw"}   -> 201 {"token": shown once, "device_id", "site", "hw"}
    POST /v1/ddi-tokens/{device_id}/revoke            -> {"device_id", "revoked": true}
    GET  /v1/ddi-tokens[?site=S&limit=N&cursor=C]     -> {"tokens": [{"device_id", "site_id", "hw", "issued_ms", "revoked_ms"}],
                                                          "next_cursor"}

Issuing is the DDI device's enrollment by preauthorization: the operator names the device, its site and
its hardware model, and the device may poll that site's gateway with the token from then on (issuing
again replaces the token; the old one stops working). Each change sends the site's gateway its new
credential table (``DdiCredentials``). Both writes are checked (``ddi_tokens.issue``/``ddi_tokens.revoke``,
operator, site-scoped) and audited here.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import fastapi
import pydantic

from cloud.http.access import source_of
from cloud.http.scope import site_scope
from cloud.http.context import ApiContext
from cloud.http.models.operations import DdiTokenIssued, DdiTokenRevoked, DdiTokensPage
from cloud.http.paging import DEFAULT_LIMIT, Cursor, Limit, paginate
from cloud.security.rbac import Principal, authorize
from cloud.security.service import Actor
from common.errors import Forbidden, NotFound
from common.firmware.manifest import MAX_NAME

__all__ = ["TOKEN_PREFIX", "new_target_token", "routes"]

TOKEN_PREFIX = "ddi_"


def new_target_token() -> str:
    """32 random bytes, URL-safe: a secret worth one SHA-256 and no stretching."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class IssueRequest(pydantic.BaseModel):
    device_id: str = pydantic.Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    site: str = pydantic.Field(min_length=1, max_length=128)
    hw: str = pydantic.Field(default="ddi", min_length=1, max_length=MAX_NAME)


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    service = ctx.security
    assert service is not None
    records, now_ms = ctx.store.ddi, ctx.now_ms
    router = fastapi.APIRouter()

    async def guard(request: fastapi.Request, action: str, site: str, target: str) -> Actor:
        principal: Principal = request.state.principal
        decision = authorize(principal, action, site)
        actor = Actor(principal.name, source_of(request))
        if not decision:
            await ctx.call(lambda: service.audit(actor, action, target, False, decision.reason, now_ms()))
            raise Forbidden(f"{decision.reason}; ask an admin for a token with that role or site")
        return actor

    @router.post("/ddi-tokens", status_code=201, response_model=DdiTokenIssued)
    async def issue(request: fastapi.Request, body: IssueRequest) -> dict[str, Any]:
        actor = await guard(request, "ddi_tokens.issue", body.site, body.device_id)
        token = new_target_token()
        digest = hashlib.sha256(token.encode()).hexdigest()  # the gateway compares the same (gateway.ddi.tokens)
        await ctx.call(lambda: records.issue(body.device_id, body.site, body.hw, digest, now_ms()))
        await ctx.call(lambda: service.audit(actor, "ddi_tokens.issue", body.device_id, True,
                                             f"TargetToken for {body.hw} at {body.site}", now_ms()))
        ctx.ddi_changed(body.site)
        return {"token": token, "device_id": body.device_id, "site": body.site, "hw": body.hw}

    @router.post("/ddi-tokens/{device_id}/revoke", response_model=DdiTokenRevoked)
    async def revoke(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        rows = await ctx.call(lambda: records.list_tokens())
        row = next((r for r in rows if r["device_id"] == device_id and r["revoked_ms"] is None), None)
        if row is None:
            raise NotFound(f"No live DDI token for the device {device_id!r} (`edgefleet devices ddi-tokens` lists them)")
        actor = await guard(request, "ddi_tokens.revoke", row["site_id"], device_id)
        await ctx.call(lambda: records.revoke(device_id, now_ms()))
        await ctx.call(lambda: service.audit(actor, "ddi_tokens.revoke", device_id, True,
                                             f"TargetToken of {row['site_id']} revoked", now_ms()))
        ctx.ddi_changed(row["site_id"])
        return {"device_id": device_id, "revoked": True}

    @router.get("/ddi-tokens", response_model=DdiTokensPage)
    async def list_tokens(request: fastapi.Request, site: str | None = None, limit: Limit = DEFAULT_LIMIT,
                          cursor: Cursor = None) -> dict[str, Any]:
        principal: Principal = request.state.principal
        decision = authorize(principal, "devices.list", site)
        if not decision:
            raise Forbidden(f"{decision.reason}; name a site of yours with ?site=")
        scope = await site_scope(request, ctx)
        rows = scope.keep(await ctx.call(lambda: records.list_tokens(site)), lambda r: r["site_id"])
        page, next_cursor = paginate(rows, key=lambda r: (r["device_id"],), limit=limit, cursor=cursor)
        return {"tokens": page, "next_cursor": next_cursor}

    return router

"""The operator API's identity and security routes (mounted with ``ApiContext.security`` under ``/v1``).

These routes check and audit their own requests (``cloud.http.access.SELF_CHECKED``): they know the
site a request acts on from its body or its device, authorize it, and write what they did to the
audit log. A refusal is ``Forbidden`` (403), an unknown id ``NotFound`` (404), a bad role a 422.

Routes (JSON; errors ``{"error", "detail"}`` like the rest of the API):

    POST /v1/enroll-tokens            {site, uses, expires_s}        -> 201 {token, token_id, site, uses, expires_ms}
    POST /v1/preauthorizations        {devices: [{serial, site, device_id?}]} -> 201 {preauthorized}
    GET  /v1/identities?site=S&status=pending   {identities: [...], next_cursor}  (enrolled, pending, rejected)
    POST /v1/devices/{id}/approve     a pending device: its serial is preauthorized for its site
    POST /v1/devices/{id}/reject      a pending device: refused, and its serial stays refused until approved
    POST /v1/devices/{id}/revoke      {reason}  -> {version, revoked, quarantined} (pushed to every gateway)
    POST /v1/devices/{id}/quarantine  {reason}  -> likewise
    POST /v1/devices/{id}/reinstate             -> likewise
    POST /v1/devices/{id}/reprovision           the device id may enroll once more with a new key
    POST /v1/devices/{id}/rotate                a signed "rotate" command: new key and certificate now
    POST /v1/sites/{site}/rotate                likewise for every enrolled device of the site
    GET  /v1/revocations              the current list
    GET  /v1/audit?after=N&limit=N&cursor=C&action=A&who=W   {records: [...], head, verified, total, next_cursor}
    POST /v1/enroll-tokens/{id}/revoke
    POST /v1/tokens/{id}/revoke
    POST /v1/users                    {user_id, role, sites?}
    POST /v1/tokens                   {user_id, role?, sites?, expires_s?} -> 201 {token, token_id, ...} (shown once)
"""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
import pydantic

from cloud.http.access import source_of
from cloud.http.scope import site_scope
from cloud.http.context import ApiContext
from cloud.http.errors import invalid
from cloud.http.models.operations import (
    ApproveResult,
    AuditPage,
    ClaimToken,
    IdentitiesPage,
    Preauthorized,
    Reprovisioned,
    Revocations,
    Revoked,
    Rotating,
    TokenMade,
    UserMade,
)
from cloud.http.paging import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, encode_cursor, paginate
from cloud.security.audit import verify_chain
from cloud.security.rbac import Principal, Role, authorize, new_token
from cloud.security.service import Actor
from common.errors import AuditChainError, ConfigError, Forbidden, NotFound

__all__ = ["routes"]

_Id = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]


class TokenRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    site: _Id
    uses: Annotated[int, pydantic.Field(ge=1, le=1_000_000)] = 50
    expires_s: Annotated[int, pydantic.Field(gt=0, le=366 * 86400)] = 7 * 86400


class Preauth(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    serial: _Id
    site: _Id
    device_id: _Id | None = None


class PreauthRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    devices: Annotated[list[Preauth], pydantic.Field(min_length=1, max_length=100_000)]


class ReasonRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    reason: Annotated[str, pydantic.StringConstraints(max_length=200)] = ""


class UserRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    user_id: _Id
    role: _Id
    sites: list[_Id] | None = None


class ApiTokenRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    user_id: _Id
    role: _Id | None = None
    sites: list[_Id] | None = None
    expires_s: Annotated[int, pydantic.Field(gt=0)] | None = None


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    service = ctx.security
    assert service is not None
    records, now_ms = ctx.store.security, ctx.now_ms
    router = fastapi.APIRouter()  # included under the API's /v1 router

    async def guard(request: fastapi.Request, action: str, site: str | None, target: str) -> Actor:
        """Authorize and, if refused, audit and raise; the caller audits what it then did."""
        principal: Principal = request.state.principal
        decision = authorize(principal, action, site)
        actor = Actor(principal.name, source_of(request))
        if not decision:
            await ctx.call(lambda: service.audit(actor, action, target, False, decision.reason, now_ms()))
            raise Forbidden(f"{decision.reason}; ask an admin for a token with that role or site")
        return actor

    async def done(actor: Actor, action: str, target: str, detail: str) -> None:
        await ctx.call(lambda: service.audit(actor, action, target, True, detail, now_ms()))

    async def device_site(device_id: str) -> str:
        site = await ctx.call(lambda: records.device_site(device_id))
        if site is None:
            raise NotFound(f"No device by the id of {device_id!r} was found "
                           "(`edgefleet devices identities` lists enrolled and pending devices)")
        return site

    @router.post("/enroll-tokens", status_code=201, response_model=ClaimToken)
    async def create_enroll_token(request: fastapi.Request, body: TokenRequest) -> dict[str, Any]:
        actor = await guard(request, "enroll_tokens.create", body.site, body.site)
        now = now_ms()
        expires_ms = now + body.expires_s * 1000
        text, token_id = await ctx.call(lambda: service.create_claim_token(body.site, body.uses, expires_ms, now))
        await done(actor, "enroll_tokens.create", body.site, f"claim token {token_id}: {body.uses} uses until {expires_ms}")
        return {"token": text, "token_id": token_id, "site": body.site, "uses": body.uses, "expires_ms": expires_ms}

    @router.post("/enroll-tokens/{token_id}/revoke", response_model=Revoked)
    async def revoke_enroll_token(request: fastapi.Request, token_id: str) -> dict[str, Any]:
        site = await ctx.call(lambda: records.claim_token(token_id))
        if site is None:
            raise NotFound(f"No claim token by the id of {token_id!r}")
        actor = await guard(request, "enroll_tokens.revoke", site.site, token_id)
        await ctx.call(lambda: records.revoke_claim_token(token_id))
        await done(actor, "enroll_tokens.revoke", token_id, f"claim token of site {site.site} revoked")
        return {"token_id": token_id, "revoked": True}

    @router.post("/preauthorizations", status_code=201, response_model=Preauthorized)
    async def preauthorize(request: fastapi.Request, body: PreauthRequest) -> dict[str, Any]:
        actors = {site: await guard(request, "devices.preauthorize", site, site) for site in {d.site for d in body.devices}}
        now = now_ms()

        def save() -> None:
            for d in body.devices:
                records.preauthorize(d.serial, d.site, d.device_id, now)

        await ctx.call(save)
        for site, actor in actors.items():
            serials = [d.serial for d in body.devices if d.site == site]
            await done(actor, "devices.preauthorize", site, f"{len(serials)} serials: {', '.join(serials[:20])}")
        return {"preauthorized": len(body.devices)}

    @router.get("/identities", response_model=IdentitiesPage)
    async def identities(request: fastapi.Request, site: str | None = None, status: str | None = None,
                         limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        scope = await site_scope(request, ctx)
        rows = scope.keep(await ctx.call(lambda: records.list_identities(site)), lambda r: r["site"])
        if status is not None:
            rows = [r for r in rows if r["status"] == status]
        page, nxt = paginate(rows, key=lambda r: (r["device_id"],), limit=limit, cursor=cursor)
        return {"identities": page, "next_cursor": nxt}

    @router.post("/devices/{device_id}/approve", response_model=ApproveResult)
    async def approve(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        actor = await guard(request, "devices.approve", await device_site(device_id), device_id)
        out = await ctx.call(lambda: service.approve(device_id, now_ms()))  # NotFound: no pending device
        await done(actor, "devices.approve", device_id, f"serial {out['serial']} preauthorized for {out['site']}")
        return out

    @router.post("/devices/{device_id}/reject", response_model=ApproveResult)
    async def reject(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        actor = await guard(request, "devices.approve", await device_site(device_id), device_id)
        out = await ctx.call(lambda: service.reject(device_id, now_ms()))  # NotFound: no pending device
        await done(actor, "devices.reject", device_id, f"serial {out['serial']} refused at {out['site']}")
        return out

    async def change(request: fastapi.Request, device_id: str, kind: str, action: str, reason: str) -> dict[str, Any]:
        actor = await guard(request, action, await device_site(device_id), device_id)
        rl, blob = await ctx.call(lambda: service.change_revocations(device_id, kind, reason, now_ms()))
        if ctx.hooks.on_revocations is not None:
            ctx.hooks.on_revocations(blob)
        await done(actor, action, device_id, f"{kind}: revocation list version {rl.version}" + (f" ({reason})" if reason else ""))
        return {"version": rl.version, "revoked": dict(rl.revoked), "quarantined": dict(rl.quarantined)}

    @router.post("/devices/{device_id}/revoke", response_model=Revocations)
    async def revoke(request: fastapi.Request, device_id: str, body: ReasonRequest | None = None) -> dict[str, Any]:
        return await change(request, device_id, "revoke", "devices.revoke", (body or ReasonRequest()).reason)

    @router.post("/devices/{device_id}/quarantine", response_model=Revocations)
    async def quarantine(request: fastapi.Request, device_id: str, body: ReasonRequest | None = None) -> dict[str, Any]:
        return await change(request, device_id, "quarantine", "devices.quarantine", (body or ReasonRequest()).reason)

    @router.post("/devices/{device_id}/reinstate", response_model=Revocations)
    async def reinstate(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        return await change(request, device_id, "reinstate", "devices.revoke", "")

    @router.post("/devices/{device_id}/reprovision", response_model=Reprovisioned)
    async def reprovision(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        actor = await guard(request, "devices.approve", await device_site(device_id), device_id)
        await ctx.call(lambda: records.set_reprovision(device_id, True, now_ms()))
        await done(actor, "devices.reprovision", device_id, "may enroll once with a new key")
        return {"device_id": device_id, "reprovision": True}

    async def rotate_devices(actor: Actor, devices: list[str], target: str) -> dict[str, Any]:
        """A signed ``rotate`` command to each device: it certifies a new key now (overlap: the old stays valid)."""
        now = now_ms()

        def queue() -> list[tuple[str, int]]:
            return [(d, ctx.store.commands.create_command(d, "rotate", {}, now + 24 * 3600 * 1000, now)) for d in devices]

        made = await ctx.call(queue)
        ctx.commanded(made)
        await done(actor, "devices.rotate", target, f"rotate command sent to {len(made)} devices")
        return {"rotating": [d for d, _ in made]}

    @router.post("/devices/{device_id}/rotate", response_model=Rotating)
    async def rotate_device(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        actor = await guard(request, "devices.rotate", await device_site(device_id), device_id)
        return await rotate_devices(actor, [device_id], device_id)

    @router.post("/sites/{site}/rotate", response_model=Rotating)
    async def rotate_site(request: fastapi.Request, site: str) -> dict[str, Any]:
        actor = await guard(request, "devices.rotate", site, site)
        rows = await ctx.call(lambda: records.list_identities(site))
        known = {d["device_id"] for d in await ctx.call(ctx.store.telemetry.list_devices)}
        return await rotate_devices(actor, [r["device_id"] for r in rows if r["status"] == "enrolled"
                                            and r["device_id"] in known], site)

    @router.get("/revocations", response_model=Revocations)
    async def revocations(request: fastapi.Request) -> dict[str, Any]:
        """The revocation list (a scoped caller's: the devices of its sites)."""
        scope = await site_scope(request, ctx, ids=True)
        version, revoked, quarantined = await ctx.call(records.revocation_list)
        revoked = {d: v for d, v in revoked.items() if scope.has_id(d)}
        quarantined = {d: v for d, v in quarantined.items() if scope.has_id(d)}
        return {"version": version, "revoked": revoked, "quarantined": quarantined}

    @router.get("/audit", response_model=AuditPage)
    async def audit(after: Annotated[int, fastapi.Query(ge=-1)] = -1,
                    limit: Annotated[int, fastapi.Query(ge=1, le=100_000)] = 1000, cursor: Cursor = None,
                    action: str | None = None, who: str | None = None, newest_first: bool = False) -> dict[str, Any]:
        """The log with its hash chain verified; ``action`` (a prefix, e.g. ``devices.``) and ``who`` filter it.
        The page is filtered and ordered in SQL; the chain is verified a batch at a time (memory stays bounded)."""
        at = decode_cursor(cursor) if cursor is not None else None
        if at is not None and (len(at) != 1 or not isinstance(at[0], int)):
            raise ConfigError(f"cursor {cursor[:40]!r} is not one this API made (pass the next_cursor of a page)")
        last = at[0] if at is not None else None

        def read() -> dict[str, Any]:
            try:
                head, verified, problem = verify_chain(records.audit_chain()), True, ""
            except AuditChainError as exc:
                head, verified, problem = "", False, str(exc)
            page = records.audit_page(after=after if newest_first or last is None else max(after, last),
                                      before=last if newest_first else None, limit=limit + 1, action=action, who=who,
                                      newest_first=newest_first)
            nxt = encode_cursor((page[limit - 1].seq,)) if len(page) > limit else None
            return {"records": [{f: getattr(r, f) for f in r.__slots__} for r in page[:limit]], "head": head,
                    "verified": verified, "problem": problem, "total": records.audit_count(), "next_cursor": nxt}

        return await ctx.call(read)

    @router.post("/users", status_code=201, response_model=UserMade)
    async def add_user(request: fastapi.Request, body: UserRequest) -> dict[str, Any]:
        actor = await guard(request, "users.manage", None, body.user_id)
        try:
            Role.parse(body.role)
        except ValueError as exc:
            raise invalid("role", str(exc)) from exc
        user = await ctx.call(lambda: records.add_user(body.user_id, body.role, body.sites, now_ms()))
        await done(actor, "users.manage", body.user_id, f"role {user.role.label}, sites {sorted(user.sites) if user.sites is not None else 'all'}")
        return {"user_id": user.user_id, "role": user.role.label, "sites": sorted(user.sites) if user.sites is not None else None}

    @router.post("/tokens", status_code=201, response_model=TokenMade)
    async def create_token(request: fastapi.Request, body: ApiTokenRequest) -> dict[str, Any]:
        actor = await guard(request, "tokens.manage", None, body.user_id)
        user = await ctx.call(lambda: records.user(body.user_id))
        if user is None:
            raise NotFound(f"No user by the id of {body.user_id!r} (create it with `edgefleet users add`)")
        now = now_ms()
        try:
            role = Role.parse(body.role) if body.role else None
            text, rec = new_token(user, now_ms=now, role=role, sites=frozenset(body.sites) if body.sites is not None else None,
                                  expires_ms=now + body.expires_s * 1000 if body.expires_s else None)
        except ValueError as exc:
            raise invalid("role", str(exc)) from exc
        await ctx.call(lambda: records.save_api_token(rec))
        await done(actor, "tokens.manage", body.user_id, f"token {rec.token_id}, role {rec.role.label}")
        return {"token": text, "token_id": rec.token_id, "user_id": user.user_id, "role": rec.role.label,
                "sites": sorted(rec.sites) if rec.sites is not None else None, "expires_ms": rec.expires_ms}

    @router.post("/tokens/{token_id}/revoke", response_model=Revoked)
    async def revoke_token(request: fastapi.Request, token_id: str) -> dict[str, Any]:
        actor = await guard(request, "tokens.manage", None, token_id)
        if not await ctx.call(lambda: records.revoke_api_token(token_id)):
            raise NotFound(f"No API token by the id of {token_id!r}")
        service.revoked_api_tokens.add(token_id)
        await done(actor, "tokens.manage", token_id, "API token revoked")
        return {"token_id": token_id, "revoked": True}

    return router

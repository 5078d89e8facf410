"""Operator access on the API: who is asking (authentication), may they (``cloud.security.rbac.authorize``), and the
audit log of every mutating request, allowed or refused; plus the identity and security routes.

``install_security(app, service, bootstrap_token, call)`` adds one HTTP middleware. For each ``/v1``
request but health it finds the principal:

- the bootstrap token (``DATA/api_token``, made at the cloud's first start) is the admin
  ``bootstrap-admin``: the demo, the fleet harness and a first operator use it to create users and tokens;
- an API token ``ef_<id>_<secret>`` (``edgefleet tokens create``): its hash is looked up and checked,
  and the principal has the lower of its own and its user's role, and the intersection of their sites.

Then ``ROUTE_ACTIONS`` names the action (``cloud.security.rbac.PERMISSIONS``) and the site each request acts
on; deny by default: a mutating route not in the table needs ``api.unmapped`` (admin) until it is
added. Reads need at least viewer (a site-scoped principal reads one site at a time, ``?site=``).
Every mutating request is audited with its principal, action, target, source address and result;
the routes of this module check and audit their own requests (they know the site from the body).

Routes (JSON; errors ``{"error", "detail"}`` like the rest of the API):

    POST /v1/enroll-tokens            {site, uses, expires_s}        -> 201 {token, token_id, site, uses, expires_ms}
    POST /v1/preauthorizations        {devices: [{serial, site, device_id?}]} -> 201 {preauthorized}
    GET  /v1/identities?site=S        {identities: [...]}  (enrolled and pending devices)
    POST /v1/devices/{id}/approve     a pending device: its serial is preauthorized for its site
    POST /v1/devices/{id}/revoke      {reason}  -> {version, revoked, quarantined} (pushed to every gateway)
    POST /v1/devices/{id}/quarantine  {reason}  -> likewise
    POST /v1/devices/{id}/reinstate             -> likewise
    POST /v1/devices/{id}/reprovision           the device id may enroll once more with a new key
    POST /v1/devices/{id}/rotate                a signed "rotate" command: new key and certificate now
    POST /v1/sites/{site}/rotate                likewise for every enrolled device of the site
    GET  /v1/revocations              the current list
    GET  /v1/audit?after=N&limit=N    {records: [...], head, verified}
    POST /v1/enroll-tokens/{id}/revoke
    POST /v1/tokens/{id}/revoke
    POST /v1/users                    {user_id, role, sites?}
    POST /v1/tokens                   {user_id, role?, sites?, expires_s?} -> 201 {token, token_id, ...} (shown once)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import fastapi
import pydantic
from fastapi.responses import JSONResponse

from cloud.security.audit import verify_chain
from cloud.security.rbac import Principal, Role, authenticate, authorize, new_token, parse_token
from cloud.security.service import Actor, SecurityService
from cloud.store import Store
from common.errors import AuditChainError

__all__ = ["BOOTSTRAP_PRINCIPAL", "ROUTE_ACTIONS", "install_security", "security_routes"]

T = TypeVar("T")
Call = Callable[[Callable[[], T]], Awaitable[T]]
BOOTSTRAP_PRINCIPAL = Principal("bootstrap-admin", Role.ADMIN)
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
TOKEN_CACHE_S = 30.0  # a verified API token is trusted this long without re-hashing (scrypt is slow on purpose)

# (method, path pattern, action, where the site comes from: "device" = the device in group 1, "path" =
# group 1 is the site, "query" = ?site=, None = fleet-wide). First match wins.
ROUTE_ACTIONS: list[tuple[str, re.Pattern[str], str, str | None]] = [
    ("POST", re.compile(r"/v1/devices/(.+)/commands"), "devices.command", "device"),
    ("POST", re.compile(r"/v1/alerts/(.+)/ack"), "alerts.ack", None),
    ("POST", re.compile(r"/v1/silences"), "alerts.silence", None),
    ("POST", re.compile(r"/v1/releases(/.*)?"), "release.create", None),
    ("POST", re.compile(r"/v1/rollouts"), "rollout.start", None),
    ("POST", re.compile(r"/v1/rollouts/(.+)/pause"), "rollout.pause", None),
    ("POST", re.compile(r"/v1/rollouts/(.+)/(abort|resume)"), "rollout.abort", None),
    ("POST", re.compile(r"/v1/devices/(.+)/tags"), "devices.tag", "device"),
    ("POST", re.compile(r"/v1/devices/(.+)/state"), "devices.set_state", "device"),
    ("POST", re.compile(r"/v1/config/set"), "config.set", None),
    ("POST", re.compile(r"/v1/groups(/.*)?"), "groups.manage", None),
    ("DELETE", re.compile(r"/v1/groups/(.+)"), "groups.manage", None),
    ("GET", re.compile(r"/v1/sites/(.+)"), "sites.list", "path"),
    ("GET", re.compile(r"/v1/audit"), "audit.read", None),
    ("GET", re.compile(r"/v1/.*"), "devices.list", "query"),
]
SELF_CHECKED = re.compile(
    r"/v1/(enroll-tokens(/.+/revoke)?|preauthorizations|users|tokens(/.+/revoke)?|sites/.+/rotate"
    r"|devices/.+/(approve|revoke|quarantine|reinstate|reprovision|rotate))"
)


def _refused(status: int, code: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _source(request: fastapi.Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


def install_security(
    app: fastapi.FastAPI, service: SecurityService, bootstrap_token: str, call: Call[Any], now_ms: Callable[[], int]
) -> None:
    expected = bootstrap_token.encode()
    cache: dict[bytes, tuple[float, Principal]] = {}
    revoked_ids = service.revoked_api_tokens  # revoked through this process: never served from the cache again

    async def principal_of(authorization: str | None) -> tuple[Principal | None, str]:
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return None, "no bearer token"
        if hmac.compare_digest(given.encode(), expected):
            return BOOTSTRAP_PRINCIPAL, "bootstrap token"
        parsed = parse_token(given)
        if parsed is None:
            return None, "malformed token"
        digest = hashlib.sha256(given.encode()).digest()
        hit = cache.get(digest)
        if hit is not None and hit[0] > time.monotonic() and parsed[0] not in revoked_ids:
            return hit[1], "cached"
        record = await call(lambda: service.records.api_token(parsed[0]))
        user = await call(lambda: service.records.user(record.user_id)) if record is not None else None
        principal, why = await call(lambda: authenticate(given, record, user, now_ms=now_ms()))
        if principal is not None:
            cache[digest] = (time.monotonic() + TOKEN_CACHE_S, principal)
        return principal, why

    async def site_of(request: fastapi.Request, source: str | None, match: re.Match[str]) -> str | None:
        if source == "device":
            device = match.group(1)
            return await call(lambda: service.records.device_site(device))
        if source == "path":
            return match.group(1)
        if source == "query":
            return request.query_params.get("site")
        return None

    @app.middleware("http")
    async def access(request: fastapi.Request, call_next: Callable[[fastapi.Request], Awaitable[Any]]) -> Any:
        path, method = request.url.path, request.method
        if not path.startswith("/v1/") or path == "/v1/health":
            return await call_next(request)
        mutating = method in MUTATING
        principal, why = await principal_of(request.headers.get("authorization"))
        if principal is None:
            if mutating:
                await call(lambda: service.audit(Actor("<unauthenticated>", _source(request)), f"{method} {path}"[:64],
                                                 path, False, f"authentication failed: {why}", now_ms()))
            return _refused(401, "unauthorized",
                            f"missing or wrong API token ({why}): send 'Authorization: Bearer <token>' "
                            "(--token / EDGEFLEET_TOKEN, or the bootstrap token in the cloud's DATA_DIR/api_token)")
        request.state.principal = principal
        if SELF_CHECKED.fullmatch(path):
            return await call_next(request)
        for m, pattern, action, source in ROUTE_ACTIONS:
            if m == method and (match := pattern.fullmatch(path)):
                site = await site_of(request, source, match)
                break
        else:
            action, site = ("api.unmapped" if mutating else "devices.list"), None
        decision = authorize(principal, action, site)
        actor = Actor(principal.name, _source(request))
        if not decision:
            if mutating:
                await call(lambda: service.audit(actor, action, path, False, decision.reason, now_ms()))
            return _refused(403, "forbidden", f"{decision.reason}; ask an admin for a token with that role or site")
        response = await call_next(request)
        if mutating:  # allowed by role and site; the result is what the route then did
            detail = f"{decision.reason}; HTTP {response.status_code}"
            ok = response.status_code < 400
            await call(lambda: service.audit(actor, action, path, ok, detail, now_ms()))
        return response


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


class _Denied(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def security_routes(
    service: SecurityService,
    store: Store,
    call: Call[Any],
    now_ms: Callable[[], int],
    on_revocations: Callable[[bytes], None] | None = None,
    on_command: Callable[[str, int], None] | None = None,
) -> fastapi.APIRouter:
    router = fastapi.APIRouter()  # included under the API's /v1 router

    async def guard(request: fastapi.Request, action: str, site: str | None, target: str) -> Actor:
        """Authorize and, if refused, audit and raise; the caller audits what it then did."""
        principal: Principal = request.state.principal
        decision = authorize(principal, action, site)
        actor = Actor(principal.name, _source(request))
        if not decision:
            await call(lambda: service.audit(actor, action, target, False, decision.reason, now_ms()))
            raise _Denied(403, "forbidden", f"{decision.reason}; ask an admin for a token with that role or site")
        return actor

    async def done(actor: Actor, action: str, target: str, detail: str) -> None:
        await call(lambda: service.audit(actor, action, target, True, detail, now_ms()))

    async def device_site(device_id: str) -> str:
        site = await call(lambda: service.records.device_site(device_id))
        if site is None:
            raise _Denied(404, "not_found", f"No device by the id of {device_id!r} was found "
                                            "(`edgefleet devices identities` lists enrolled and pending devices)")
        return site

    @router.post("/enroll-tokens", status_code=201)
    async def create_enroll_token(request: fastapi.Request, body: TokenRequest) -> dict[str, Any]:
        actor = await guard(request, "enroll_tokens.create", body.site, body.site)
        now = now_ms()
        expires_ms = now + body.expires_s * 1000
        text, token_id = await call(lambda: service.create_claim_token(body.site, body.uses, expires_ms, now))
        await done(actor, "enroll_tokens.create", body.site, f"claim token {token_id}: {body.uses} uses until {expires_ms}")
        return {"token": text, "token_id": token_id, "site": body.site, "uses": body.uses, "expires_ms": expires_ms}

    @router.post("/enroll-tokens/{token_id}/revoke")
    async def revoke_enroll_token(request: fastapi.Request, token_id: str) -> dict[str, Any]:
        site = await call(lambda: service.records.claim_token(token_id))
        if site is None:
            raise _Denied(404, "not_found", f"No claim token by the id of {token_id!r}")
        actor = await guard(request, "enroll_tokens.revoke", site.site, token_id)
        await call(lambda: service.records.revoke_claim_token(token_id))
        await done(actor, "enroll_tokens.revoke", token_id, f"claim token of site {site.site} revoked")
        return {"token_id": token_id, "revoked": True}

    @router.post("/preauthorizations", status_code=201)
    async def preauthorize(request: fastapi.Request, body: PreauthRequest) -> dict[str, Any]:
        actors = {site: await guard(request, "devices.preauthorize", site, site) for site in {d.site for d in body.devices}}
        now = now_ms()

        def save() -> None:
            for d in body.devices:
                service.records.preauthorize(d.serial, d.site, d.device_id, now)

        await call(save)
        for site, actor in actors.items():
            serials = [d.serial for d in body.devices if d.site == site]
            await done(actor, "devices.preauthorize", site, f"{len(serials)} serials: {', '.join(serials[:20])}")
        return {"preauthorized": len(body.devices)}

    @router.get("/identities")
    async def identities(site: str | None = None) -> dict[str, Any]:
        return {"identities": await call(lambda: service.records.list_identities(site))}

    @router.post("/devices/{device_id}/approve")
    async def approve(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        actor = await guard(request, "devices.approve", await device_site(device_id), device_id)
        try:
            out = await call(lambda: service.approve(device_id, now_ms()))
        except LookupError as exc:
            raise _Denied(404, "not_found", str(exc)) from exc
        await done(actor, "devices.approve", device_id, f"serial {out['serial']} preauthorized for {out['site']}")
        return out

    async def change(request: fastapi.Request, device_id: str, kind: str, action: str, reason: str) -> dict[str, Any]:
        actor = await guard(request, action, await device_site(device_id), device_id)
        rl, blob = await call(lambda: service.change_revocations(device_id, kind, reason, now_ms()))
        if on_revocations is not None:
            on_revocations(blob)
        await done(actor, action, device_id, f"{kind}: revocation list version {rl.version}" + (f" ({reason})" if reason else ""))
        return {"version": rl.version, "revoked": dict(rl.revoked), "quarantined": dict(rl.quarantined)}

    @router.post("/devices/{device_id}/revoke")
    async def revoke(request: fastapi.Request, device_id: str, body: ReasonRequest | None = None) -> dict[str, Any]:
        return await change(request, device_id, "revoke", "devices.revoke", (body or ReasonRequest()).reason)

    @router.post("/devices/{device_id}/quarantine")
    async def quarantine(request: fastapi.Request, device_id: str, body: ReasonRequest | None = None) -> dict[str, Any]:
        return await change(request, device_id, "quarantine", "devices.quarantine", (body or ReasonRequest()).reason)

    @router.post("/devices/{device_id}/reinstate")
    async def reinstate(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        return await change(request, device_id, "reinstate", "devices.revoke", "")

    @router.post("/devices/{device_id}/reprovision")
    async def reprovision(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        actor = await guard(request, "devices.approve", await device_site(device_id), device_id)
        await call(lambda: service.records.set_reprovision(device_id, True, now_ms()))
        await done(actor, "devices.reprovision", device_id, "may enroll once with a new key")
        return {"device_id": device_id, "reprovision": True}

    async def rotate_devices(actor: Actor, devices: list[str], target: str) -> dict[str, Any]:
        """A signed ``rotate`` command to each device: it certifies a new key now (overlap: the old stays valid)."""
        now = now_ms()

        def queue() -> list[tuple[str, int]]:
            return [(d, store.commands.create_command(d, "rotate", {}, now + 24 * 3600 * 1000, now)) for d in devices]

        made = await call(queue)
        for device, seq in made:
            if on_command is not None:
                on_command(device, seq)
        await done(actor, "devices.rotate", target, f"rotate command sent to {len(made)} devices")
        return {"rotating": [d for d, _ in made]}

    @router.post("/devices/{device_id}/rotate")
    async def rotate_device(request: fastapi.Request, device_id: str) -> dict[str, Any]:
        actor = await guard(request, "devices.rotate", await device_site(device_id), device_id)
        return await rotate_devices(actor, [device_id], device_id)

    @router.post("/sites/{site}/rotate")
    async def rotate_site(request: fastapi.Request, site: str) -> dict[str, Any]:
        actor = await guard(request, "devices.rotate", site, site)
        rows = await call(lambda: service.records.list_identities(site))
        known = {d["device_id"] for d in await call(store.telemetry.list_devices)}
        return await rotate_devices(actor, [r["device_id"] for r in rows if r["status"] == "enrolled"
                                            and r["device_id"] in known], site)

    @router.get("/revocations")
    async def revocations() -> dict[str, Any]:
        version, revoked, quarantined = await call(service.records.revocation_list)
        return {"version": version, "revoked": revoked, "quarantined": quarantined}

    @router.get("/audit")
    async def audit(after: int = -1, limit: int = 1000) -> dict[str, Any]:
        records = await call(lambda: service.records.audit_records(-1, 1_000_000))
        try:
            head, verified, problem = verify_chain(records), True, ""
        except AuditChainError as exc:
            head, verified, problem = "", False, str(exc)
        shown = [r for r in records if r.seq > after][: max(1, min(limit, 100_000))]
        return {"records": [{f: getattr(r, f) for f in r.__slots__} for r in shown], "head": head,
                "verified": verified, "problem": problem, "total": len(records)}

    @router.post("/users", status_code=201)
    async def add_user(request: fastapi.Request, body: UserRequest) -> dict[str, Any]:
        actor = await guard(request, "users.manage", None, body.user_id)
        try:
            Role.parse(body.role)
        except ValueError as exc:
            raise _Denied(422, "invalid_request", str(exc)) from exc
        user = await call(lambda: service.records.add_user(body.user_id, body.role, body.sites, now_ms()))
        await done(actor, "users.manage", body.user_id, f"role {user.role.label}, sites {sorted(user.sites) if user.sites is not None else 'all'}")
        return {"user_id": user.user_id, "role": user.role.label, "sites": sorted(user.sites) if user.sites is not None else None}

    @router.post("/tokens", status_code=201)
    async def create_token(request: fastapi.Request, body: ApiTokenRequest) -> dict[str, Any]:
        actor = await guard(request, "tokens.manage", None, body.user_id)
        user = await call(lambda: service.records.user(body.user_id))
        if user is None:
            raise _Denied(404, "not_found", f"No user by the id of {body.user_id!r} (create it with `edgefleet users add`)")
        now = now_ms()
        try:
            role = Role.parse(body.role) if body.role else None
            text, rec = new_token(user, now_ms=now, role=role, sites=frozenset(body.sites) if body.sites is not None else None,
                                  expires_ms=now + body.expires_s * 1000 if body.expires_s else None)
        except ValueError as exc:
            raise _Denied(422, "invalid_request", str(exc)) from exc
        await call(lambda: service.records.save_api_token(rec))
        await done(actor, "tokens.manage", body.user_id, f"token {rec.token_id}, role {rec.role.label}")
        return {"token": text, "token_id": rec.token_id, "user_id": user.user_id, "role": rec.role.label,
                "sites": sorted(rec.sites) if rec.sites is not None else None, "expires_ms": rec.expires_ms}

    @router.post("/tokens/{token_id}/revoke")
    async def revoke_token(request: fastapi.Request, token_id: str) -> dict[str, Any]:
        actor = await guard(request, "tokens.manage", None, token_id)
        if not await call(lambda: service.records.revoke_api_token(token_id)):
            raise _Denied(404, "not_found", f"No API token by the id of {token_id!r}")
        service.revoked_api_tokens.add(token_id)
        await done(actor, "tokens.manage", token_id, "API token revoked")
        return {"token_id": token_id, "revoked": True}

    return router


def denied_handler(app: fastapi.FastAPI) -> None:
    @app.exception_handler(_Denied)
    async def _denied(_request: fastapi.Request, exc: _Denied) -> JSONResponse:
        return _refused(exc.status, exc.code, exc.detail)

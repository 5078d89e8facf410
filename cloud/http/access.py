"""Operator access on the API: who is asking (authentication), may they (``cloud.security.rbac.authorize``),
and the audit log of every mutating request, allowed or refused.

``install(app, ctx)`` adds one HTTP middleware (with ``ctx.security``). For each ``/v1`` request but
health it finds the principal:

- the bootstrap token (``DATA/api_token``, made at the cloud's first start) is the admin
  ``bootstrap-admin``: the demo, the fleet harness and a first operator use it to create users and tokens;
- an API token ``ef_<id>_<secret>`` (``edgefleet tokens create``): its hash is looked up and checked,
  and the principal has the lower of its own and its user's role, and the intersection of their sites.

Then ``ROUTE_ACTIONS`` names the action (``cloud.security.rbac.PERMISSIONS``) and the site each request
acts on; deny by default: a mutating route not in the table needs ``api.unmapped`` (admin) until it is
added. Reads need at least viewer (a site-scoped principal reads one site at a time, ``?site=``).
Every mutating request is audited with its principal, action, target, source address and result;
the routes of ``cloud.http.security`` (``SELF_CHECKED``) check and audit their own requests (they know
the site from the body). Refusals are ``Unauthenticated`` (401) and ``Forbidden`` (403), rendered by
``cloud.http.errors`` like every error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import fastapi

from cloud.http.context import ApiContext
from cloud.http.errors import error_response
from cloud.security.rbac import Principal, Role, authenticate, authorize, parse_token
from cloud.security.service import Actor
from common.errors import Forbidden, Unauthenticated

__all__ = ["BOOTSTRAP_PRINCIPAL", "ROUTE_ACTIONS", "SELF_CHECKED", "install", "source_of"]

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
    ("POST", re.compile(r"/v1/rollouts(/dry-run)?"), "rollout.start", None),
    ("POST", re.compile(r"/v1/rollouts/(.+)/pause"), "rollout.pause", None),
    ("POST", re.compile(r"/v1/rollouts/(.+)/(abort|resume)"), "rollout.abort", None),
    ("POST", re.compile(r"/v1/devices/(.+)/tags"), "devices.tag", "device"),
    ("POST", re.compile(r"/v1/devices/(.+)/state"), "devices.set_state", "device"),
    ("POST", re.compile(r"/v1/config/set"), "config.set", None),
    ("POST", re.compile(r"/v1/groups(/.*)?"), "groups.manage", None),
    ("DELETE", re.compile(r"/v1/groups/(.+)"), "groups.manage", None),
    ("GET", re.compile(r"/v1/sites/(.+)"), "sites.list", "path"),
    ("GET", re.compile(r"/v1/audit"), "audit.read", None),
    ("GET", re.compile(r"/metrics"), "metrics.read", None),
    ("GET", re.compile(r"/v1/.*"), "devices.list", "query"),
]
SELF_CHECKED = re.compile(
    r"/v1/(me|enroll-tokens(/.+/revoke)?|preauthorizations|users|tokens(/.+/revoke)?|sites/.+/rotate"
    r"|devices/.+/(approve|reject|revoke|quarantine|reinstate|reprovision|rotate)|ddi-tokens(/.+/revoke)?)"
)


def source_of(request: fastapi.Request) -> str:
    """Where a request came from, for the audit log."""
    return f"{request.client.host}:{request.client.port}" if request.client else ""


def install(app: fastapi.FastAPI, ctx: ApiContext) -> None:
    service = ctx.security
    assert service is not None
    records = ctx.store.security
    expected = ctx.token.encode()
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
        record = await ctx.call(lambda: records.api_token(parsed[0]))
        user = await ctx.call(lambda: records.user(record.user_id)) if record is not None else None
        principal, why = await ctx.call(lambda: authenticate(given, record, user, now_ms=ctx.now_ms()))
        if principal is not None:
            cache[digest] = (time.monotonic() + TOKEN_CACHE_S, principal)
        return principal, why

    async def site_of(request: fastapi.Request, source: str | None, match: re.Match[str]) -> str | None:
        if source == "device":
            device = match.group(1)
            return await ctx.call(lambda: records.device_site(device))
        if source == "path":
            return match.group(1)
        if source == "query":
            return request.query_params.get("site")
        return None

    async def audit(actor: Actor, action: str, target: str, ok: bool, detail: str) -> None:
        await ctx.call(lambda: service.audit(actor, action, target, ok, detail, ctx.now_ms()))

    @app.middleware("http")
    async def access(request: fastapi.Request, call_next: Callable[[fastapi.Request], Awaitable[Any]]) -> Any:
        path, method = request.url.path, request.method
        if not (path.startswith("/v1/") or path == "/metrics") or path == "/v1/health":
            return await call_next(request)
        mutating = method in MUTATING
        principal, why = await principal_of(request.headers.get("authorization"))
        if principal is None:
            if mutating:
                await audit(Actor("<unauthenticated>", source_of(request)), f"{method} {path}"[:64], path, False,
                            f"authentication failed: {why}")
            return error_response(Unauthenticated(
                f"missing or wrong API token ({why}): send 'Authorization: Bearer <token>' "
                "(--token / EDGEFLEET_TOKEN, or the bootstrap token in the cloud's DATA_DIR/api_token)"))
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
        actor = Actor(principal.name, source_of(request))
        if not decision:
            if mutating:
                await audit(actor, action, path, False, decision.reason)
            return error_response(Forbidden(f"{decision.reason}; ask an admin for a token with that role or site"))
        response = await call_next(request)
        if mutating:  # allowed by role and site; the result is what the route then did
            await audit(actor, action, path, response.status_code < 400, f"{decision.reason}; HTTP {response.status_code}")
        return response

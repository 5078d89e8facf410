"""Operator access on the API: who is asking (authentication), may they (``cloud.security.rbac.authorize``),
on which site (``cloud.http.scope``), how large a body they may send, and the audit log of every
mutating request an authenticated principal made, allowed or refused.

``install(app, ctx)`` adds one HTTP middleware (with ``ctx.security``). For each ``/v1`` request but
health it finds the principal:

- the bootstrap token (``DATA/api_token``, made at the cloud's first start) is the admin
  ``bootstrap-admin``: the demo, the fleet harness and a first operator use it to create users and tokens;
- an API token ``ef_<id>_<secret>`` (``edgefleet tokens create``): its hash is looked up and checked,
  and the principal has the lower of its own and its user's role, and the intersection of their sites.

Unauthenticated requests cost a counter, not a write: no audit row, one generic 401 text whatever the
reason (the reason goes to the debug log), the scrypt check on a worker thread (never the store thread),
and after ``FAILURES_PER_MINUTE`` failures from one source address it is answered 429 at once for the rest of
that minute. ``AccessStats`` (``app.state.access``) counts them.

Then ``cloud.http.scope.ROUTES`` names the action and the site rule of the route; deny by default: a
request the table does not name needs ``api.unmapped`` (admin) fleet-wide. The role is checked before any
body is read; a body over its route's limit (``BODY_LIMITS``, default ``DEFAULT_BODY_LIMIT``) is a 413 that
names the limit. The routes of rule ``self`` (``cloud.http.security``, ``cloud.http.ddi``) check the site from
their body and audit their own requests. Refusals are ``Unauthenticated`` (401), ``Forbidden`` (403),
``BodyTooLarge`` (413) and ``RateLimited`` (429), rendered by ``cloud.http.errors`` like every error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import fastapi

from cloud.http.context import ApiContext
from cloud.http.errors import error_response
from cloud.http.scope import match
from cloud.security.rbac import Principal, Role, authenticate, authorize, parse_token
from cloud.security.service import Actor
from common.errors import BodyTooLarge, Forbidden, RateLimited, Unauthenticated

__all__ = ["BODY_LIMITS", "BOOTSTRAP_PRINCIPAL", "DEFAULT_BODY_LIMIT", "GENERIC_401", "AccessStats", "install", "source_of"]

log = logging.getLogger("edgefleet.api")

BOOTSTRAP_PRINCIPAL = Principal("bootstrap-admin", Role.ADMIN)
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
TOKEN_CACHE_S = 30.0  # a verified API token is trusted this long without re-hashing (scrypt is slow on purpose)
FAILURES_PER_MINUTE = 30  # failed authentications from one source address before it gets 429 for the minute
MAX_SOURCES = 4096  # source addresses whose failures are counted (the oldest forgotten first)
DEFAULT_BODY_LIMIT = 1 << 20  # a JSON body of any route not in BODY_LIMITS
# routes whose body may be larger; None: the route streams and limits its own body (a release image)
BODY_LIMITS: dict[str, int | None] = {
    "/v1/preauthorizations": 32 << 20,  # up to 100,000 serials
    "/v1/releases": None,  # ReleaseSettings.max_image_bytes, streamed to disk by cloud.releases
    "/v1/releases/{version}/signature": None,  # MAX_SIGNED, read by the route
}
GENERIC_401 = ("missing or wrong API token: send 'Authorization: Bearer <token>' "
               "(--token / EDGEFLEET_TOKEN, or the bootstrap token in the cloud's DATA_DIR/api_token)")


@dataclass
class AccessStats:
    """What unauthenticated and refused traffic cost: counters only."""

    unauthenticated: int = 0
    rate_limited: int = 0
    forbidden: int = 0
    too_large: int = 0


def source_of(request: fastapi.Request) -> str:
    """Where a request came from, for the audit log."""
    return f"{request.client.host}:{request.client.port}" if request.client else ""


class _Failures:
    """Failed authentications per source address in the current minute, bounded to ``MAX_SOURCES`` sources."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, tuple[int, int]] = OrderedDict()  # host -> (minute, failures)

    def limited(self, host: str, now: float) -> bool:
        minute, count = self._seen.get(host, (-1, 0))
        return minute == int(now // 60) and count >= FAILURES_PER_MINUTE

    def failed(self, host: str, now: float) -> None:
        minute, count = self._seen.pop(host, (-1, 0))
        this = int(now // 60)
        self._seen[host] = (this, count + 1 if minute == this else 1)
        while len(self._seen) > MAX_SOURCES:
            self._seen.popitem(last=False)


def install(app: fastapi.FastAPI, ctx: ApiContext) -> None:
    service = ctx.security
    assert service is not None
    records = ctx.store.security
    expected = ctx.token.encode()
    cache: dict[bytes, tuple[float, Principal]] = {}
    revoked_ids = service.revoked_api_tokens  # revoked through this process: never served from the cache again
    failures = _Failures()
    stats = app.state.access = AccessStats()

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
        # scrypt on a worker thread: the store thread's lane is for the store
        principal, why = await asyncio.to_thread(authenticate, given, record, user, now_ms=ctx.now_ms())
        if principal is not None:
            cache[digest] = (time.monotonic() + TOKEN_CACHE_S, principal)
        return principal, why

    async def sites_of(rule_site: str, params: dict[str, str], request: fastapi.Request) -> list[str | None] | None:
        """The sites the request acts on (None stands for fleet-wide); None: the role alone is checked here
        (``unsited``, ``self``, and a ``list`` that names no site or device: its rows are filtered)."""
        if rule_site == "device":
            device = params["device_id"]
            return [await ctx.call(lambda: records.device_site(device))]
        if rule_site == "site":
            return [params["site"]]
        if rule_site == "global":
            return [None]
        if rule_site == "list":
            named: list[str | None] = []
            if (site := request.query_params.get("site")) is not None:
                named.append(site)
            if (device := request.query_params.get("device")) is not None:
                named.append(await ctx.call(lambda: records.device_site(device)))
            return named or None
        return None

    async def audit(actor: Actor, action: str, target: str, ok: bool, detail: str) -> None:
        await ctx.call(lambda: service.audit(actor, action, target, ok, detail, ctx.now_ms()))

    async def within_limit(request: fastapi.Request, template: str | None) -> int | None:
        """None if the body is within its route's limit (read into the request here when its size is not
        declared), else the limit."""
        limit = BODY_LIMITS.get(template or "", DEFAULT_BODY_LIMIT)
        if limit is None:
            return None
        declared = request.headers.get("content-length")
        if declared is not None:
            return limit if not declared.isdigit() or int(declared) > limit else None
        if request.method not in MUTATING:
            return None
        body, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                return limit
            body.append(piece)
        request._body = b"".join(body)  # handed on to the route (starlette's cached request)
        return None

    @app.middleware("http")
    async def access(request: fastapi.Request, call_next: Callable[[fastapi.Request], Awaitable[Any]]) -> Any:
        path, method = request.url.path, request.method
        if not (path.startswith("/v1/") or path == "/metrics") or path == "/v1/health":
            return await call_next(request)
        mutating = method in MUTATING
        host, now = request.client.host if request.client else "", time.monotonic()
        if failures.limited(host, now):
            stats.rate_limited += 1
            return error_response(RateLimited(
                f"more than {FAILURES_PER_MINUTE} failed authentications from {host} this minute: try again later"))
        principal, why = await principal_of(request.headers.get("authorization"))
        if principal is None:
            stats.unauthenticated += 1
            failures.failed(host, now)
            log.debug("refused an unauthenticated request", extra={"path": path, "source": host, "why": why})
            return error_response(Unauthenticated(GENERIC_401))
        request.state.principal = principal
        found = match(method, path)
        if found is None:
            template, action, rule_site, params = None, ("api.unmapped" if mutating else "devices.list"), "global", {}
        else:
            template, rule, params = found
            action, rule_site = rule.action, rule.site
        # the role first (before any body is read), then each site the request names: only for a scoped principal
        # (an unscoped one may act on every site, so no store read is spent finding the site)
        decision = authorize(dataclasses.replace(principal, sites=None), action)
        scoped = decision and principal.sites is not None
        for site in (await sites_of(rule_site, params, request) or []) if scoped else []:
            if not (decision := authorize(principal, action, site)):
                break
        actor = Actor(principal.name, source_of(request))
        if not decision:
            stats.forbidden += 1
            if mutating:
                await audit(actor, action, path, False, decision.reason)
            return error_response(Forbidden(f"{decision.reason}; ask an admin for a token with that role or site"))
        if (limit := await within_limit(request, template)) is not None:
            stats.too_large += 1
            return error_response(BodyTooLarge(f"{method} {template or path}: the body is over the limit of {limit} "
                                               "bytes for this route"))
        response = await call_next(request)
        if mutating and rule_site != "self":  # allowed by role and site; the result is what the route then did
            await audit(actor, action, path, response.status_code < 400, f"{decision.reason}; HTTP {response.status_code}")
        return response

"""The operator HTTP API: JSON over HTTP with a bearer token, served in the cloud's own event loop.

    app = create_app(ApiContext(store, token, executor=store_thread.urgent, releases=..., security=...))
    api = await serve_api(app, "127.0.0.1", 0)    # cloud.http.server; api.port is the port bound
    ...
    await api.stop()

``GET /v1/health`` needs no token; every other route is under ``/v1`` and needs
``Authorization: Bearer <token>``. Routes, one module per feature, each a function of the one
``ApiContext`` (``cloud.http.context``):

    devices.py    devices, sites, telemetry summary, gaps, update outcomes, commands
    alerts.py     alerts, acknowledgements, silences
    fleet.py      fleet views, tags, lifecycle, groups, layered config, metrics, site overview
    releases.py   firmware releases (with ``ctx.releases``)
    security.py   enrollment, identities, revocation, users and tokens, the audit log (with ``ctx.security``)
    ddi.py        DDI devices' TargetTokens (with ``ctx.security``)
    rollouts.py   rollouts (with ``ctx.rollouts``)

``GET /v1/me`` says who the token stands for (name, role, sites). ``GET /metrics`` (``cloud.http.prometheus``,
with ``ctx.metrics``) is the Prometheus exposition, behind the same token. ``mounts`` add what is served
beside the API on the same port (the console: ``cloud.console.mount``); they are called last.

The OpenAPI document (``/openapi.json``) names every route with its request and response models and the
error bodies it may answer (``cloud.http.models``); ``tests/cloud/http/test_openapi_live.py`` holds the
live API to it with schemathesis.

Who may do what: without ``ctx.security`` only the bootstrap token is accepted; with it,
``cloud.http.access`` authenticates every request, checks its action and site and audits it.
Every error goes through the one handler of ``cloud.http.errors`` (status from the error's
class; body ``{"error": code, "detail": message}``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

import fastapi
import pydantic

import cloud.http.access as access
import cloud.http.alerts as alerts
import cloud.http.ddi as ddi
import cloud.http.devices as devices
import cloud.http.errors as errors
import cloud.http.fleet as fleet
import cloud.http.prometheus as prometheus
import cloud.http.releases as releases
import cloud.http.rollouts as rollouts
import cloud.http.security as security
from cloud.http.context import API_PREFIX, ApiContext
from cloud.http.models import ERROR_RESPONSES
from cloud.http.models.operations import Me
from common.errors import ConfigError, Unauthenticated

__all__ = ["Health", "Mount", "create_app"]

Mount = Callable[[fastapi.FastAPI, ApiContext], None]


class Health(pydantic.BaseModel):
    status: str


def create_app(ctx: ApiContext, mounts: Iterable[Mount] = ()) -> fastapi.FastAPI:
    """The operator API over ``ctx``: its routes, the access check, the one error handler; then ``mounts``."""
    if not ctx.token:
        raise ConfigError("the operator API needs a non-empty token")
    app = fastapi.FastAPI(title="EdgeFleet operator API", version="1", docs_url=None, redoc_url=None)
    errors.install(app)

    @app.get(f"{API_PREFIX}/health", response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    secured = fastapi.APIRouter(prefix=API_PREFIX, dependencies=[fastapi.Depends(_bearer(ctx))],
                                responses=ERROR_RESPONSES)

    @secured.get("/me", response_model=Me)
    async def me(request: fastapi.Request) -> dict[str, object]:
        """Who the token stands for: its name, role and sites (null: every site)."""
        principal = getattr(request.state, "principal", None) or access.BOOTSTRAP_PRINCIPAL
        return {"name": principal.name, "role": principal.role.label,
                "sites": sorted(principal.sites) if principal.sites is not None else None, "token_id": principal.token_id}

    secured.include_router(devices.routes(ctx))
    secured.include_router(alerts.routes(ctx))
    secured.include_router(fleet.routes(ctx))
    if ctx.releases is not None:
        secured.include_router(releases.routes(ctx))
    if ctx.security is not None:
        access.install(app, ctx)
        secured.include_router(security.routes(ctx))
        secured.include_router(ddi.routes(ctx))
    if ctx.rollouts is not None:
        secured.include_router(rollouts.routes(ctx))
    app.include_router(secured)
    if ctx.metrics is not None:
        app.include_router(prometheus.routes(ctx), dependencies=[fastapi.Depends(_bearer(ctx))], responses=ERROR_RESPONSES)
    for mount in mounts:
        mount(app, ctx)
    return app


def _bearer(ctx: ApiContext):  # noqa: ANN202 -- a FastAPI dependency
    expected = ctx.token.encode()

    def check(request: fastapi.Request, authorization: str | None = fastapi.Header(default=None)) -> None:
        if ctx.security is not None and getattr(request.state, "principal", None) is not None:
            return  # cloud.http.access authenticated the caller and checked the action
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthenticated(
                "missing or wrong API token: send 'Authorization: Bearer <token>' with the token from the "
                "cloud's data dir (DATA_DIR/api_token), e.g. `edgefleet devices list --data-dir DATA_DIR`"
            )

    return check

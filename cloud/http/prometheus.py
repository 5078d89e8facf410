"""The cloud's Prometheus exposition (``cloud.metrics``), served two ways:

- ``GET /metrics`` on the API's port, behind the API's bearer token (action ``metrics.read``: any unscoped
  role), mounted by ``create_app`` when ``ctx.metrics`` is given;
- ``--metrics-bind HOST:PORT`` (``serve_metrics``): a listener of its own with no token, for a scraper that
  cannot send one: bind it to an address only the monitoring network reaches. It serves ``GET /metrics``
  only, in the cloud's event loop like the API.
"""

from __future__ import annotations

import fastapi
from fastapi.responses import Response

from cloud.http.context import ApiContext
from cloud.http.server import ServedApi, serve_api
from cloud.metrics import CONTENT_TYPE, FleetCollector, exposition, read_fleet
from common.errors import ConfigError

__all__ = ["parse_bind", "routes", "scrape", "serve_metrics"]

RESPONSES = {200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
                   "description": "Prometheus text exposition format 0.0.4"}}


async def scrape(ctx: ApiContext) -> bytes:
    """One scrape: the fleet snapshot read on the store thread, with the live counters."""
    now = ctx.now_ms()
    snap = await ctx.call(lambda: read_fleet(ctx.store, now))
    return exposition(ctx.metrics, FleetCollector(snap))


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    router = fastapi.APIRouter()

    @router.get("/metrics", response_class=Response, responses=RESPONSES)
    async def metrics() -> Response:
        return Response(await scrape(ctx), media_type=CONTENT_TYPE)

    return router


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"metrics bind {bind!r} is not HOST:PORT (e.g. 127.0.0.1:9700; port 0 for any)")
    return host.strip("[]"), int(port)


async def serve_metrics(ctx: ApiContext, bind: str) -> ServedApi:
    """``GET /metrics`` with no token on ``bind``; returns once it accepts connections."""
    host, port = parse_bind(bind)
    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(routes(ctx))
    return await serve_api(app, host, port)

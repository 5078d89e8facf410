"""The operator HTTP API: JSON over HTTP with a bearer token, served in the cloud's own event loop.

    app = create_app(store, token)                # or create_app(store, token, executor=store_thread,
                                                  #                   on_command=push_to_gateway)
    api = await serve_api(app, "127.0.0.1", 0)    # api.port is the port actually bound
    ...
    await api.stop()

Routes (all JSON; every error body is ``{"error": code, "detail": message}``):

    GET  /v1/health                       no auth  {"status": "ok"}
    GET  /v1/devices                      bearer   {"devices": [...]}   (Store.list_devices)
    GET  /v1/sites                        bearer   {"sites": [...]}     (Store.list_sites)
    GET  /v1/sites/{site}                 bearer   Store.site_detail(site, now); 404 for an unknown site
    GET  /v1/telemetry/summary            bearer   Store.telemetry_summary()
    GET  /v1/updates?device=D                bearer   {"updates": [...]} (update outcomes reported by devices)
    GET  /v1/gaps?device=D&site=S         bearer   {"gaps": [...], "totals": [...]} (Store.gaps, gap_totals),
                                                   with a device also "missing": {stream: [[first, last]...]}
                                                   (Store.missing_ranges: unexplained gaps)
    POST /v1/devices/{device}/commands    bearer   {"name", "args": {k: v}, "ttl_s"} -> 201
                                                   {"device_id", "seq", "expires_ms"}; 404 for an unknown device
    GET  /v1/devices/{device}/commands    bearer   {"commands": [...]} (Store.list_commands); 404 likewise
    GET  /v1/alerts?state=open|resolved|all&subject=S&limit=N
                                          bearer   {"alerts": [...]} newest first (Store.list_alerts)
    POST /v1/alerts/{id}/ack              bearer   {"by": NAME} (optional) -> the alert; 404 for an unknown id
    POST /v1/silences                     bearer   {"target", "until_ms" | "for_s", "by", "reason"} -> 201
                                                   the silence; ``target`` is a rule name or a subject
    GET  /v1/silences                     bearer   {"silences": [...]} those still running
    POST|GET /v1/releases...              bearer   firmware releases, with ``releases=`` (``cloud.releases_api``)
    POST|GET /v1/rollouts...              bearer   rollouts, with ``rollouts=`` (``cloud.rollouts.api``)

A request body that does not validate is a 422 ``invalid_request`` naming each bad field.
After a command is stored, ``on_command(device_id, seq)`` (if given) is called on the
event loop, so the cloud can push it to the device's gateway at once; likewise
``on_silence(target, until_ms)`` after a silence is stored, so the alert engine
holds back the target's events at once.

Store calls are blocking, so they never run on the event loop: with
``executor`` (e.g. the cloud's single store thread, a one-worker
``ThreadPoolExecutor``) every call is submitted there; without it, each call
runs in Starlette's worker-thread pool (anyio; ``Store`` is thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, TypeVar

import fastapi
import pydantic
import uvicorn
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cloud.fleet import query
from cloud.fleet import views as fleet
from cloud.store import Store
from common.errors import ApiError, ConfigError, EdgeFleetError, QueryError, StoreError
from common.protocol.codec import MAX_STR, MAX_VALUES
from common.protocol.messages import STREAMS

if TYPE_CHECKING:
    from cloud.releases.service import ReleaseService
    from cloud.security.service import SecurityService

__all__ = [
    "API_PREFIX",
    "MAX_SILENCE_S",
    "MAX_TTL_S",
    "AckRequest",
    "CommandRequest",
    "ServedApi",
    "SilenceRequest",
    "create_app",
    "serve_api",
]

API_PREFIX = "/v1"
MAX_TTL_S = 366 * 24 * 3600  # a command's time to live is at most a year
MAX_SILENCE_S = 366 * 24 * 3600  # and so is a silence
T = TypeVar("T")

log = logging.getLogger("edgefleet.api")

_WireStr = Annotated[str, pydantic.StringConstraints(max_length=MAX_STR)]  # what the wire's Command can carry


class CommandRequest(pydantic.BaseModel):
    """The body of POST /v1/devices/{device}/commands."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=MAX_STR)]
    args: Annotated[dict[_WireStr, _WireStr], pydantic.Field(max_length=MAX_VALUES)] = {}
    ttl_s: Annotated[int, pydantic.Field(gt=0, le=MAX_TTL_S)] = 3600


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


def _wall_ms() -> int:
    return int(time.time() * 1000)


class _Refused(Exception):
    """Raised inside a route; rendered as ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def query_view(row: dict[str, Any]) -> dict[str, Any]:
    """A device row as the query language sees it (``id``, ``site``, ``attr.gateway`` ...); with inventory,
    tags, groups and state when ``row`` is a fleet view (``cloud.fleet.views.query_view``)."""
    return fleet.query_view(row)


def create_app(
    store: Store,
    token: str,
    *,
    executor: Executor | None = None,
    on_command: Callable[[str, int], None] | None = None,
    on_silence: Callable[[str, int], None] | None = None,
    releases: ReleaseService | None = None,
    rollouts: Any = None,  # cloud.rollouts.service.RolloutService
    now_ms: Callable[[], int] = _wall_ms,
    security: SecurityService | None = None,
    on_revocations: Callable[[bytes], None] | None = None,
    fleet_options: dict[str, Any] | None = None,
) -> fastapi.FastAPI:
    """The operator API over ``store``; every route but health needs ``Authorization: Bearer <token>``.

    ``on_command(device_id, seq)`` runs on the event loop after a command is stored,
    ``on_silence(target, until_ms)`` after a silence is;
    ``now_ms`` is the wall clock in milliseconds (commands' times, devices online).
    """
    if not token:
        raise ConfigError("the operator API needs a non-empty token")
    expected = token.encode()

    async def call(fn: Callable[[], T]) -> T:
        try:
            if executor is None:
                return await run_in_threadpool(fn)
            return await asyncio.wrap_future(executor.submit(fn))
        except StoreError as exc:
            raise _Refused(503, "store_unavailable", str(exc)) from exc

    def authorize(request: fastapi.Request, authorization: str | None = fastapi.Header(default=None)) -> None:
        if security is not None and getattr(request.state, "principal", None) is not None:
            return  # cloud.security.api authenticated the caller and checked the action
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise _Refused(
                401,
                "unauthorized",
                "missing or wrong API token: send 'Authorization: Bearer <token>' with the token from the "
                "cloud's data dir (DATA_DIR/api_token), e.g. `edgefleet devices list --data-dir DATA_DIR`",
                {"WWW-Authenticate": "Bearer"},
            )

    app = fastapi.FastAPI(title="EdgeFleet operator API", docs_url=None, redoc_url=None)

    @app.exception_handler(_Refused)
    async def _refused(_request: fastapi.Request, exc: _Refused) -> JSONResponse:
        return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: fastapi.Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)

    async def known_device(device_id: str) -> None:
        if await call(lambda: store.telemetry.device_gateway(device_id)) is None:
            raise _Refused(
                404,
                "not_found",
                f"No device by the id of {device_id!r} was found (`edgefleet devices list` shows the known ones)",
            )

    @app.get(f"{API_PREFIX}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    secured = fastapi.APIRouter(prefix=API_PREFIX, dependencies=[fastapi.Depends(authorize)])

    @secured.get("/devices")
    async def devices(where: str | None = None) -> dict[str, Any]:
        """Every device, or those matching ``where`` (the query language of ``cloud.fleet.query``)."""
        node = None
        if where:
            try:
                node = query.parse(where)
            except QueryError as exc:
                raise _Refused(400, "invalid_query", str(exc)) from exc
        rows = await call(store.telemetry.list_devices)
        if node is not None:
            # tags, groups, lifecycle state and inventory come from the fleet view (cloud.fleet.views)
            views = await call(lambda: fleet.device_views(store.fleet.fleet_snapshot()))
            matched = {v["device_id"] for v in views if query.matches(node, fleet.query_view(v))}
            rows = [r for r in rows if r["device_id"] in matched]
        return {"devices": rows}

    @secured.get("/sites")
    async def sites() -> dict[str, Any]:
        return {"sites": await call(store.telemetry.list_sites)}

    @secured.get("/sites/{site:path}")
    async def site_detail(site: str) -> dict[str, Any]:
        now = now_ms()
        detail = await call(lambda: store.telemetry.site_detail(site, now))
        if detail is None:
            raise _Refused(
                404,
                "not_found",
                f"No site by the id of {site!r} was found (`edgefleet sites list` shows the known ones)",
            )
        return detail

    @secured.get("/telemetry/summary")
    async def telemetry_summary() -> dict[str, Any]:
        return await call(store.telemetry.telemetry_summary)

    @secured.get("/gaps")
    async def gaps(device: str | None = None, site: str | None = None) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            body: dict[str, Any] = {"gaps": store.telemetry.gaps(device, site), "totals": store.telemetry.gap_totals(device, site)}
            if device is not None:
                missing = {stream: store.telemetry.missing_ranges(device, stream) for stream in STREAMS}
                body["missing"] = {stream: [list(r) for r in ranges] for stream, ranges in missing.items() if ranges}
            return body

        return await call(read)

    @secured.get("/updates")
    async def updates(device: str | None = None) -> dict[str, Any]:
        """Update outcomes the devices reported (committed, rolled_back, failed, with the reason)."""
        return {"updates": await call(lambda: store.telemetry.records_of_kind("update", device))}

    @secured.post("/devices/{device_id:path}/commands", status_code=201)
    async def create_command(device_id: str, body: CommandRequest) -> dict[str, Any]:
        await known_device(device_id)
        now = now_ms()
        expires_ms = now + body.ttl_s * 1000
        seq = await call(lambda: store.commands.create_command(device_id, body.name, body.args, expires_ms, now))
        if on_command is not None:
            try:
                on_command(device_id, seq)
            except (EdgeFleetError, RuntimeError):  # e.g. the store thread is shutting down
                # the command is committed and stays queued for the gateway's next session; failing
                # the request now would only make the operator create it a second time
                log.exception("pushing a new command failed", extra={"device": device_id, "seq": seq})
        return {"device_id": device_id, "seq": seq, "expires_ms": expires_ms}

    @secured.get("/devices/{device_id:path}/commands")
    async def list_commands(device_id: str) -> dict[str, Any]:
        await known_device(device_id)
        return {"commands": await call(lambda: store.commands.list_commands(device_id))}

    @secured.get("/alerts")
    async def list_alerts(state: str = "open", subject: str | None = None, limit: int = 500) -> dict[str, Any]:
        if state not in ("open", "resolved", "all"):
            raise _Refused(422, "invalid_request", f"state {state!r} is not one of open, resolved, all")
        if not 1 <= limit <= 10_000:
            raise _Refused(422, "invalid_request", f"limit {limit} is not between 1 and 10000")
        return {"alerts": await call(lambda: store.alerts.list_alerts(state, subject=subject, limit=limit))}

    @secured.post("/alerts/{alert_id:path}/ack")
    async def ack_alert(alert_id: str, body: AckRequest | None = None) -> dict[str, Any]:
        by = (body or AckRequest()).by
        now = now_ms()
        row = await call(lambda: store.alerts.ack_alert(alert_id, by, now))
        if row is None:
            raise _Refused(
                404,
                "not_found",
                f"No alert by the id of {alert_id!r} was found (`edgefleet alerts list --state all` shows them)",
            )
        return row

    @secured.post("/silences", status_code=201)
    async def create_silence(body: SilenceRequest) -> dict[str, Any]:
        now = now_ms()
        until_ms = body.until_ms if body.until_ms is not None else now + round((body.for_s or 0) * 1000)
        if until_ms <= now:
            raise _Refused(422, "invalid_request", f"until_ms {until_ms} is not in the future (now is {now})")
        if until_ms > now + MAX_SILENCE_S * 1000:
            raise _Refused(422, "invalid_request", f"a silence lasts at most {MAX_SILENCE_S // 86400} days")
        row = await call(lambda: store.alerts.add_silence(body.target, until_ms, body.by, body.reason, now))
        if on_silence is not None:
            try:
                on_silence(body.target, until_ms)
            except (EdgeFleetError, RuntimeError):
                # the silence is committed and the engine reads it at the cloud's next start
                log.exception("applying a new silence failed", extra={"target": body.target})
        return row

    @secured.get("/silences")
    async def list_silences() -> dict[str, Any]:
        now = now_ms()
        return {"silences": await call(lambda: store.alerts.active_silences(now))}

    from cloud.fleet_api import fleet_routes  # inventory, tags, groups, lifecycle, config, metrics (issue 8)

    secured.include_router(fleet_routes(store, call, now_ms, on_command=on_command, **(fleet_options or {})))
    if releases is not None:
        from cloud.releases_api import release_routes

        secured.include_router(release_routes(releases, now_ms))
    if security is not None:  # operator access (RBAC) and the audit log: cloud.security.api
        from cloud.security.api import denied_handler, install_security, security_routes

        install_security(app, security, token, call, now_ms)
        denied_handler(app)
        secured.include_router(security_routes(security, store, call, now_ms, on_revocations, on_command))
    if rollouts is not None:
        from cloud.rollouts.api import rollout_routes

        secured.include_router(rollout_routes(rollouts))
    app.include_router(secured)
    return app


class _Server(uvicorn.Server):
    """uvicorn in someone else's event loop: it installs no signal handlers (the cloud owns
    SIGINT/SIGTERM) and reports readiness through an event instead of a flag to poll."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()


class ServedApi(NamedTuple):
    """A running API: unpack as ``server, task, port`` or call ``await api.stop()``."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout``), then return."""
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def serve_api(
    app: fastapi.FastAPI, host: str, port: int, *, graceful_timeout_s: float = 5.0
) -> ServedApi:
    """Serve ``app`` in the CURRENT event loop; return once it accepts connections.

    The socket is bound here, so a busy port raises ``ConfigError`` naming host:port
    (uvicorn itself would ``sys.exit``). ``port=0`` binds a free port; the result
    carries the port actually bound.
    """
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        loop="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful_timeout_s,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"edgefleet-api-{host}:{port}")
    ready = asyncio.create_task(server.ready.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled while starting: leave nothing running
        server.should_exit = server.force_exit = True
        task.cancel()
        sock.close()
        raise
    finally:
        ready.cancel()
    if not server.started:
        sock.close()
        cause = task.exception() if task.done() and not task.cancelled() else None
        raise ApiError(f"operator API on {host}:{port} did not start: {cause!r}") from cause
    return ServedApi(server, task, sock.getsockname()[1])


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot serve the operator API on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve the operator API on {host}:{port}: {exc}") from exc
    return sock

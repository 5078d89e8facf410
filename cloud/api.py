"""The operator HTTP API: JSON over HTTP with a bearer token, served in the cloud's own event loop.

    app = create_app(store, token)                # or create_app(store, token, executor=store_thread)
    api = await serve_api(app, "127.0.0.1", 0)    # api.port is the port actually bound
    ...
    await api.stop()

Routes (all JSON; every error body is ``{"error": code, "detail": message}``):

    GET /v1/health              no auth      {"status": "ok"}
    GET /v1/devices             bearer       {"devices": [...]}   (Store.list_devices)
    GET /v1/sites               bearer       {"sites": [...]}     (Store.list_sites)
    GET /v1/telemetry/summary   bearer       Store.telemetry_summary()

Store calls are blocking, so they never run on the event loop: with
``executor`` (e.g. the cloud's single store thread, a one-worker
``ThreadPoolExecutor``) every call is submitted there; without it, each call
runs in Starlette's worker-thread pool (anyio; ``Store`` is thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, NamedTuple, TypeVar

import fastapi
import uvicorn
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from cloud.store import Store
from common.errors import ApiError, ConfigError, StoreError

__all__ = ["API_PREFIX", "ServedApi", "create_app", "serve_api"]

API_PREFIX = "/v1"
T = TypeVar("T")


class _Refused(Exception):
    """Raised inside a route; rendered as ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def create_app(store: Store, token: str, *, executor: Executor | None = None) -> fastapi.FastAPI:
    """The operator API over ``store``; every route but health needs ``Authorization: Bearer <token>``."""
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

    def authorize(authorization: str | None = fastapi.Header(default=None)) -> None:
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

    @app.get(f"{API_PREFIX}/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    secured = fastapi.APIRouter(prefix=API_PREFIX, dependencies=[fastapi.Depends(authorize)])

    @secured.get("/devices")
    async def devices() -> dict[str, Any]:
        return {"devices": await call(store.list_devices)}

    @secured.get("/sites")
    async def sites() -> dict[str, Any]:
        return {"sites": await call(store.list_sites)}

    @secured.get("/telemetry/summary")
    async def telemetry_summary() -> dict[str, Any]:
        return await call(store.telemetry_summary)

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

"""Serving the operator API with uvicorn inside the cloud's own event loop.

    api = await serve_api(app, "127.0.0.1", 0)    # api.port is the port actually bound
    ...
    await api.stop()                              # stop accepting, let requests in flight finish
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import NamedTuple

import fastapi
import uvicorn

from common.errors import ApiError, ConfigError

__all__ = ["ServedApi", "serve_api"]


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

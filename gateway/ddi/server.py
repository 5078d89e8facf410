"""The DDI HTTP driver: HTTP/1.1 over asyncio streams with h11, TLS with the site's certificate; opt-in.

Why h11: a site gateway needs a few routes, keep-alive, bodies with a limit and files with ``Range``; h11
is the sans-IO HTTP/1.1 state machine (no framework, no threads, pure Python, already what uvicorn and
httpx use), so this driver is one short loop per connection and the decisions stay in the core
(``gateway.ddi.core``). The cloud's web stack (FastAPI, Starlette, uvicorn) would bring routing, pydantic
and an ASGI server to a box that has none of that to do.

Each request is read (its body only if its ``Content-Length`` is within ``max_body``: else 413 with the
limit named, unread), handed to the core as ``DdiRequest`` and answered when the core's ``DdiResponse``
for it comes back (``respond``); a download is streamed from the site cache's file in 64 KiB reads. A
client that sends nothing for ``idle_s`` is disconnected; connections beyond ``max_connections`` are
closed at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import h11

from gateway.ddi.api import error
from gateway.ddi.events import DdiRequest, DdiResponse

__all__ = ["DdiServer", "tls_context"]

log = logging.getLogger("edgefleet.gateway.ddi")

READ = 64 * 1024


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context with the site's certificate (PEM chain) and key; TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class DdiServer:
    def __init__(self, bind: str, feed: Callable[[DdiRequest], None], artifact_path: Callable[[str], Path], *,
                 tls: ssl.SSLContext | None = None, max_body: int = 64 * 1024, answer_s: float = 30.0,
                 idle_s: float = 120.0, max_connections: int = 256) -> None:
        host, _, port = bind.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port or 0)
        self.feed, self.artifact_path, self.tls = feed, artifact_path, tls
        self.max_body, self.answer_s, self.idle_s, self.max_connections = max_body, answer_s, idle_s, max_connections
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[DdiResponse]] = {}
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.counters = {"ddi_requests": 0, "ddi_too_large": 0, "ddi_bytes_sent": 0}

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def start(self) -> str:
        """Bind; returns the base URL (``https://host:port``)."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"{self.scheme}://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        for fut in self._waiting.values():
            fut.cancel()

    def respond(self, resp: DdiResponse) -> None:
        """The core's answer to request ``resp.rid`` (the effect handler)."""
        fut = self._waiting.pop(resp.rid, None)
        if fut is not None and not fut.done():
            fut.set_result(resp)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= self.max_connections:
            writer.close()
            return
        self._conns.add(task)
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "?"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            while True:
                event = await self._next(conn, reader)
                if not isinstance(event, h11.Request):
                    return
                await self._serve(conn, event, reader, writer, source)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.TimeoutError, ssl.SSLError, asyncio.IncompleteReadError,
                asyncio.CancelledError):
            return
        finally:
            self._conns.discard(task)
            writer.close()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(reader.read(READ), self.idle_s)
            conn.receive_data(data)

    async def _serve(self, conn: h11.Connection, req: h11.Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, source: str) -> None:
        self.counters["ddi_requests"] += 1
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in req.headers}
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.max_body:
            self.counters["ddi_too_large"] += 1
            await self._send(conn, writer, DdiResponse(0, 413, error(413, f"a DDI request body is at most {self.max_body} "
                                                                          "bytes"), headers=(("Connection", "close"),)))
            return
        body = bytearray()
        while True:
            event = await self._next(conn, reader)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    raise h11.ProtocolError("body longer than its Content-Length")
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                return
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        rid = next(self._ids)
        fut: asyncio.Future[DdiResponse] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self.feed(DdiRequest(rid, req.method.decode("latin-1"), path, query, headers.get("authorization", ""),
                             bytes(body), source, f"{self.scheme}://{headers.get('host', f'{self.host}:{self.port}')}",
                             headers.get("range", "")))
        try:
            resp = await asyncio.wait_for(fut, self.answer_s)
        except asyncio.TimeoutError:
            self._waiting.pop(rid, None)
            resp = DdiResponse(rid, 503, error(503, "the gateway did not answer in time; try again"))
        await self._send(conn, writer, resp)

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, resp: DdiResponse) -> None:
        length = resp.file[2] - resp.file[1] + 1 if resp.file is not None else len(resp.body)
        headers = [("Content-Type", resp.content_type), ("Content-Length", str(length)), *resp.headers]
        writer.write(conn.send(h11.Response(status_code=resp.status, headers=headers)))
        if resp.file is None:
            if resp.body:
                writer.write(conn.send(h11.Data(data=resp.body)))
        else:
            await self._stream(conn, writer, resp.file)
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _stream(self, conn: h11.Connection, writer: asyncio.StreamWriter, file: tuple[str, int, int]) -> None:
        sha, start, end = file
        loop = asyncio.get_running_loop()
        f = await loop.run_in_executor(None, open, self.artifact_path(sha), "rb")
        try:
            pos = start
            while pos <= end:
                n = min(READ, end - pos + 1)
                data = await loop.run_in_executor(None, lambda p=pos, k=n: (f.seek(p), f.read(k))[1])
                if not data:
                    raise ConnectionError(f"artifact {sha[:16]} ended at byte {pos}")
                writer.write(conn.send(h11.Data(data=data)))
                await writer.drain()
                pos += len(data)
                self.counters["ddi_bytes_sent"] += len(data)
        finally:
            f.close()

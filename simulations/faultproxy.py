"""A TCP fault proxy on 127.0.0.1 that cuts, black-holes, delays, throttles and resets a link on command.

ZeroMQ runs over plain TCP, so a byte-level proxy between any two tiers (device and
gateway, gateway and cloud) is enough to break their link the way a site's uplink
breaks. The proxy runs its own asyncio loop in its own thread, so synchronous code (a
test, the demo) drives it with plain method calls; each command returns once it has
taken effect on every existing connection, and applies to new ones too:

- ``cut()``: close every connection (FIN) and close each new one as soon as it is
  accepted: the client sees its connection drop and its reconnects fail;
- ``blackhole()``: keep connections open but drop every byte both ways; the peers see
  silence, which only heartbeats detect. A FIN or a reset from either side is held
  until the black hole ends (as TCP would retransmit it), so the other peer still hears
  nothing;
- ``delay(seconds)``: every chunk is delivered ``seconds`` after it was read, both
  ways, in order;
- ``throttle(bytes_per_s)``: one token bucket per direction, shared by all connections
  (the link's capacity); the sender sees TCP backpressure;
- ``reset()``: send RST on every current connection (``SO_LINGER`` 0, then close), both
  sides, and keep accepting;
- ``restore()``: forward normally again (clears cut, black hole, delay and throttle).

Cut and black hole win over delay and throttle, which combine with each other (a
satellite link is both slow and far). ``stats()`` returns a snapshot of the mode and the
counters. The thread never dies on a peer error: each connection handles its own
``OSError`` (reset, broken pipe, refused upstream) and only that connection ends; a
reset or a vanished peer on one side is passed on as a reset to the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from common.shaping import TokenBucket

__all__ = ["FaultProxy", "ProxyStats"]

log = logging.getLogger(__name__)

CHUNK = 65536  # bytes read at a time
QUEUE_CHUNKS = 64  # chunks held per direction before reading pauses (TCP backpressure)
_EOF, _RESET = object(), object()  # queue markers: the source half-closed, the source failed
_TO_TARGET, _TO_CLIENT = 0, 1
_LINGER_0 = struct.pack("ii", 1, 0)
_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot; ``to_target`` is client to target, ``to_client`` the way back."""

    mode: str  # "forward", "cut", "blackhole", "delay", "throttle" or "delay+throttle"
    delay_s: float
    throttle_bytes_per_s: float | None
    bytes_to_target: int
    bytes_to_client: int
    dropped_to_target: int  # bytes swallowed by a black hole
    dropped_to_client: int
    connections_accepted: int  # every accept, including those closed at once by a cut
    connections_refused: int  # accepted while cut and closed at once
    connections_forwarded: int  # accepted and connected to the target
    connections_open: int
    upstream_failures: int  # accepted, but the target could not be reached
    resets: int  # connections ended by reset()


class _Conn:
    """One proxied connection: two directions, each a reader task and a writer task."""

    def __init__(self, proxy: FaultProxy, cid: int, client: _Streams, upstream: _Streams) -> None:
        self.proxy, self.cid = proxy, cid
        self.task = asyncio.current_task()
        (self.c_reader, self.c_writer), (self.u_reader, self.u_writer) = client, upstream

    async def run(self) -> None:
        q_up: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
        q_down: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
        pumps = [
            asyncio.create_task(self._read(self.c_reader, q_up)),
            asyncio.create_task(self._read(self.u_reader, q_down)),
        ]
        writers = [
            asyncio.create_task(self._write(q_up, self.u_writer, _TO_TARGET)),
            asyncio.create_task(self._write(q_down, self.c_writer, _TO_CLIENT)),
        ]
        rst = False
        try:
            await asyncio.gather(*writers)  # both directions ended with a FIN
        except (OSError, _Teardown) as exc:  # one side reset or vanished: reset the other too
            log.debug("fault proxy connection %d ended: %r", self.cid, exc)
            rst = True
        finally:
            for t in pumps + writers:
                t.cancel()
            await self.close(rst=rst)

    async def _read(self, reader: asyncio.StreamReader, q: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(CHUNK):
                await q.put((loop.time(), data))
        except OSError:
            await q.put((loop.time(), _RESET))
        else:
            await q.put((loop.time(), _EOF))

    async def _write(self, q: asyncio.Queue, writer: asyncio.StreamWriter, way: int) -> None:
        proxy, loop = self.proxy, asyncio.get_running_loop()
        while True:
            read_at, item = await q.get()
            if item is _EOF or item is _RESET:
                while proxy._blackholed:
                    await proxy._changed.wait()
                if item is _RESET:
                    raise _Teardown("the other side failed")
                if writer.can_write_eof():
                    writer.write_eof()
                return
            data: bytes = item
            while data:
                if proxy._blackholed:
                    proxy._dropped[way] += len(data)
                    break
                wait = read_at + proxy._delay_s - loop.time()
                bucket = proxy._buckets[way]
                piece = data if bucket is None else data[: int(bucket.burst)]
                if wait <= 0 and bucket is not None and not bucket.take(len(piece), loop.time()):
                    wait = bucket.wait_time(len(piece), loop.time())
                if wait > 0:
                    await proxy._pause(wait)  # woken early by any command
                    continue
                proxy._forwarded[way] += len(piece)  # first: the peer may read it before write() returns
                writer.write(piece)
                data = data[len(piece) :]
                await writer.drain()

    def abort(self, *, rst: bool = False) -> None:
        """Close both sides now, with RST if ``rst``; safe to call more than once."""
        for w in (self.c_writer, self.u_writer):
            sock = w.get_extra_info("socket")
            if rst and not w.transport.is_closing() and sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                except OSError:
                    pass  # the socket already failed: it closes anyway, RST or not
            w.transport.abort()
        self.proxy._conns.discard(self)

    async def close(self, *, rst: bool = False) -> None:
        """``abort()``, then wait until both sockets are closed (the FIN or RST is sent)."""
        self.abort(rst=rst)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        for w in (self.c_writer, self.u_writer):
            try:
                await w.wait_closed()
            except OSError:
                pass  # the close is what we wanted


class _Teardown(Exception):
    """Ends a connection whose other side failed."""


class FaultProxy:
    """Forwards ``listen_host:listen_port`` to ``target``; ``start()`` returns the bound port."""

    def __init__(self, listen_host: str = "127.0.0.1", listen_port: int = 0, *, target: tuple[str, int]) -> None:
        self.listen_host, self.listen_port, self.target = listen_host, listen_port, target
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # one per accepted connection, ours to cancel
        # link state: written only on the proxy's loop, read anywhere
        self._cut = self._blackholed = False
        self._delay_s = 0.0
        self._buckets: list[TokenBucket | None] = [None, None]
        self._changed = asyncio.Event()  # replaced on every command; set to wake paused writers
        self._forwarded = [0, 0]
        self._dropped = [0, 0]
        self._accepted = self._refused = self._forwarded_conns = self._upstream_failures = self._resets = 0

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint to connect to instead of the target's."""
        return f"tcp://{self.listen_host}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> int:
        if self._thread is not None:
            raise RuntimeError(f"fault proxy to {self.target} is already started")
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),), daemon=True)
        self._thread.name = f"faultproxy->{self.target[0]}:{self.target[1]}"
        self._thread.start()
        try:
            self.port = ready.result(timeout=10)  # raises the bind error, if any
        except OSError:
            self._thread.join(timeout=10)
            self._thread = None
            raise
        return self.port

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def _main(self, ready: concurrent.futures.Future[int]) -> None:
        self._loop, self._stop, self._changed = asyncio.get_running_loop(), asyncio.Event(), asyncio.Event()
        try:
            server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port)
        except OSError as exc:
            ready.set_exception(exc)
            return
        ready.set_result(server.sockets[0].getsockname()[1])
        async with server:
            await self._stop.wait()
            server.close()
            await self._close_all(rst=False)
            for task in list(self._tasks):  # still connecting upstream
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain callback: asyncio 3.11 logs an error if its own callback task is cancelled
        self._accepted += 1
        if self._cut:
            self._refused += 1
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                upstream = await asyncio.open_connection(*self.target)
        except (OSError, TimeoutError) as exc:
            self._upstream_failures += 1
            log.debug("fault proxy cannot reach %s: %r", self.target, exc)
            writer.transport.abort()
            return
        if self._cut:  # cut while connecting
            self._refused += 1
            writer.transport.abort()
            upstream[1].transport.abort()
            return
        conn = _Conn(self, self._accepted, (reader, writer), upstream)
        self._conns.add(conn)
        self._forwarded_conns += 1
        await conn.run()

    async def _close_all(self, *, rst: bool) -> None:
        conns = list(self._conns)
        for conn in conns:
            conn.abort(rst=rst)  # before the cancelled task runs its own (FIN) close
        await asyncio.gather(*(conn.close(rst=rst) for conn in conns))
        if rst:
            self._resets += len(conns)

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            pass

    # --- commands (called from any thread) ----------------------------------------------

    def _command(self, name: str, apply: Callable[[], None], *, close: bool | None = None) -> None:
        """Run ``apply()`` on the proxy's loop, wake paused writers, close connections if asked."""
        if self._loop is None or self._thread is None:
            raise RuntimeError(f"fault proxy to {self.target} is not running: cannot {name}")

        async def run() -> None:
            apply()
            self._changed.set()
            self._changed = asyncio.Event()
            if close is not None:
                await self._close_all(rst=close)

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)
        log.info("fault proxy :%d -> %s:%d: %s (%s)", self.port, *self.target, name, self.mode)

    def cut(self) -> None:
        """Close every connection and close new ones as soon as they are accepted."""
        self._command("cut", lambda: setattr(self, "_cut", True), close=False)

    def blackhole(self) -> None:
        """Keep connections open but drop every byte, both ways."""
        self._command("blackhole", lambda: setattr(self, "_blackholed", True))

    def delay(self, seconds: float) -> None:
        """Deliver every chunk ``seconds`` after it was read (0 removes the delay)."""
        if not seconds >= 0:
            raise ValueError(f"fault proxy delay must be >= 0 seconds, got {seconds!r}")
        self._command(f"delay {seconds}s", lambda: setattr(self, "_delay_s", float(seconds)))

    def throttle(self, bytes_per_s: float | None, burst_bytes: float | None = None) -> None:
        """Cap each direction at ``bytes_per_s`` (None removes the cap); burst defaults to 50 ms worth."""
        buckets: list[TokenBucket | None] = [None, None]
        if bytes_per_s is not None:
            burst = burst_bytes if burst_bytes is not None else max(1.0, bytes_per_s * 0.05)
            buckets = [TokenBucket(bytes_per_s, burst), TokenBucket(bytes_per_s, burst)]
        self._command(f"throttle {bytes_per_s} B/s", lambda: setattr(self, "_buckets", buckets))

    def reset(self) -> None:
        """Send RST on every current connection, both sides; keep accepting."""
        self._command("reset", lambda: None, close=True)

    def restore(self) -> None:
        """Forward normally: no cut, no black hole, no delay, no throttle."""

        def apply() -> None:
            self._cut = self._blackholed = False
            self._delay_s = 0.0
            self._buckets = [None, None]

        self._command("restore", apply)

    # --- observation --------------------------------------------------------------------

    @property
    def mode(self) -> str:
        if self._cut:
            return "cut"
        if self._blackholed:
            return "blackhole"
        shaped = [name for name, on in (("delay", self._delay_s > 0), ("throttle", self._buckets[0])) if on]
        return "+".join(shaped) or "forward"

    def stats(self) -> ProxyStats:
        bucket = self._buckets[0]
        return ProxyStats(
            mode=self.mode,
            delay_s=self._delay_s,
            throttle_bytes_per_s=None if bucket is None else bucket.rate,
            bytes_to_target=self._forwarded[_TO_TARGET],
            bytes_to_client=self._forwarded[_TO_CLIENT],
            dropped_to_target=self._dropped[_TO_TARGET],
            dropped_to_client=self._dropped[_TO_CLIENT],
            connections_accepted=self._accepted,
            connections_refused=self._refused,
            connections_forwarded=self._forwarded_conns,
            connections_open=len(self._conns),
            upstream_failures=self._upstream_failures,
            resets=self._resets,
        )

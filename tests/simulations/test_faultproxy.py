"""The fault proxy with real sockets on 127.0.0.1: plain TCP both ends, then ZeroMQ through it."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

import simulations.faultproxy
from simulations.faultproxy import FaultProxy
from tests.waits import until_true

pytestmark = pytest.mark.integration

SILENCE_S = 0.3  # how long "nothing arrives" is watched for; a timeout, never an assertion on time


def wait_for(predicate: Callable[[], object], what: str) -> object:
    """Poll the proxy's counters (its own thread updates them) until ``predicate`` holds; the hang guard bounds it."""
    return until_true(predicate, what, every_s=0.01)


def recv_exactly(sock: socket.socket, n: int, timeout_s: float = 10.0) -> bytes:
    sock.settimeout(timeout_s)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise AssertionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def assert_silent(sock: socket.socket) -> None:
    """Nothing arrives for SILENCE_S, and the connection is not closed either."""
    sock.settimeout(SILENCE_S)
    with pytest.raises(TimeoutError):
        data = sock.recv(1)
        raise AssertionError(f"expected silence, got {data!r}")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """The target: a listening socket the test accepts from, so it holds both ends."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    yield srv
    srv.close()


@pytest.fixture
def proxy(listener: socket.socket) -> Iterator[FaultProxy]:
    with FaultProxy(target=listener.getsockname()) as p:
        yield p


@pytest.fixture
def connect(proxy: FaultProxy, listener: socket.socket) -> Iterator[Callable[[], tuple[socket.socket, socket.socket]]]:
    """Open a connection through the proxy; returns (client end, target end)."""
    opened: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        forwarded = proxy.stats().connections_forwarded
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        server, _ = listener.accept()
        opened.extend([client, server])
        # the kernel completes both handshakes before the proxy registers the pair
        wait_for(lambda: proxy.stats().connections_forwarded > forwarded, what="the proxy to pair the connection")
        return client, server

    yield make
    for s in opened:
        s.close()


def test_all() -> None:
    assert simulations.faultproxy.__all__ == ["FaultProxy", "ProxyStats"]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def test_forwards_an_echo_and_counts_bytes_and_connections() -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as echo:
        echo.daemon_threads = True
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        try:
            with FaultProxy(target=echo.server_address) as proxy:
                payload = bytes(range(256)) * 4096  # 1 MiB
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as c:
                    sender = threading.Thread(target=c.sendall, args=(payload,))
                    sender.start()
                    assert recv_exactly(c, len(payload)) == payload
                    sender.join()
                stats = proxy.stats()
                assert stats.mode == "forward"
                assert stats.bytes_to_target == stats.bytes_to_client == len(payload)
                assert stats.connections_accepted == 1
                assert (stats.dropped_to_target, stats.dropped_to_client, stats.resets) == (0, 0, 0)
        finally:
            echo.shutdown()


def test_a_half_close_is_forwarded(connect) -> None:
    client, server = connect()
    client.sendall(b"last words")
    client.shutdown(socket.SHUT_WR)
    assert recv_exactly(server, 10) == b"last words"
    assert server.recv(1) == b""  # the FIN came through
    server.sendall(b"reply after FIN")
    assert recv_exactly(client, 15) == b"reply after FIN"


def test_cut_closes_connections_and_refuses_new_ones_until_restore(proxy, connect) -> None:
    client, server = connect()
    proxy.cut()
    client.settimeout(10)
    server.settimeout(10)
    assert client.recv(1) == b""
    assert server.recv(1) == b""
    assert proxy.stats().mode == "cut"
    assert proxy.stats().connections_open == 0

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as refused:
        assert refused.recv(1) == b""  # accepted, then closed at once
    assert proxy.stats().connections_refused == 1

    proxy.restore()
    client, server = connect()
    client.sendall(b"back")
    assert recv_exactly(server, 4) == b"back"


def test_blackhole_drops_bytes_both_ways_and_keeps_the_connection_until_restore(proxy, connect) -> None:
    client, server = connect()
    proxy.blackhole()
    assert proxy.stats().mode == "blackhole"
    client.sendall(b"ping")
    server.sendall(b"pong!")
    assert_silent(server)
    assert_silent(client)
    wait_for(lambda: proxy.stats().dropped_to_target == 4 and proxy.stats().dropped_to_client == 5, what="drops")
    assert proxy.stats().connections_open == 1

    proxy.restore()
    client.sendall(b"again")
    assert recv_exactly(server, 5) == b"again"  # the dropped "ping" is gone for good
    server.sendall(b"hello")
    assert recv_exactly(client, 5) == b"hello"


def test_blackhole_also_holds_a_close_until_restore(proxy, connect) -> None:
    client, server = connect()
    proxy.blackhole()
    client.close()
    assert_silent(server)  # no FIN: the peer only hears silence
    proxy.restore()
    server.settimeout(10)
    assert server.recv(1) == b""


def test_blackhole_takes_effect_on_new_connections(proxy, connect) -> None:
    proxy.blackhole()
    client, server = connect()
    client.sendall(b"x")
    assert_silent(server)


def test_delay_adds_at_least_the_latency_both_ways_in_order(proxy, connect) -> None:
    client, server = connect()
    proxy.delay(0.2)
    assert proxy.stats().mode == "delay"
    t0 = time.monotonic()
    for i in range(5):
        client.sendall(b"%d" % i)
    assert recv_exactly(server, 5) == b"01234"
    assert time.monotonic() - t0 >= 0.2

    t0 = time.monotonic()
    server.sendall(b"back")
    assert recv_exactly(client, 4) == b"back"
    assert time.monotonic() - t0 >= 0.2

    proxy.restore()
    assert proxy.stats().delay_s == 0.0
    client.sendall(b"fast")
    assert recv_exactly(server, 4) == b"fast"


def test_throttle_caps_the_rate(proxy, connect) -> None:
    rate, burst, n = 200_000, 10_000, 100_000
    client, server = connect()
    proxy.throttle(rate, burst)
    assert proxy.stats().mode == "throttle"
    assert proxy.stats().throttle_bytes_per_s == rate
    payload = b"z" * n
    t0 = time.monotonic()
    sender = threading.Thread(target=client.sendall, args=(payload,))
    sender.start()
    assert recv_exactly(server, n) == payload
    elapsed = time.monotonic() - t0
    sender.join()
    assert elapsed >= (n - burst) / rate

    proxy.restore()
    client.sendall(payload)
    assert recv_exactly(server, n) == payload


def test_delay_and_throttle_combine(proxy) -> None:
    proxy.delay(0.05)
    proxy.throttle(1_000_000)
    assert proxy.stats().mode == "delay+throttle"
    proxy.cut()
    assert proxy.stats().mode == "cut"  # a cut wins while it lasts
    proxy.restore()
    assert proxy.stats().mode == "forward"


def test_reset_sends_rst_to_both_ends_and_keeps_accepting(proxy, connect) -> None:
    client, server = connect()
    client.sendall(b"hi")
    assert recv_exactly(server, 2) == b"hi"
    proxy.reset()
    client.settimeout(10)
    server.settimeout(10)
    with pytest.raises(ConnectionResetError):
        client.recv(1)
    with pytest.raises(ConnectionResetError):
        server.recv(1)
    assert proxy.stats().resets == 1
    assert proxy.stats().mode == "forward"

    client, server = connect()
    client.sendall(b"new")
    assert recv_exactly(server, 3) == b"new"


def test_the_proxy_survives_peers_that_reset_and_an_unreachable_target(proxy, connect, listener) -> None:
    for _ in range(5):
        client, server = connect()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.sendall(b"x" * 100_000)
        client.close()  # RST from the client while data is in flight
        server.settimeout(10)
        with pytest.raises(ConnectionResetError):  # passed on as a reset
            server.recv(1)
    wait_for(lambda: proxy.stats().connections_open == 0, what="connections to close")

    client, server = connect()
    client.sendall(b"still here")
    assert recv_exactly(server, 10) == b"still here"

    closed_port = socket.create_server(("127.0.0.1", 0))
    target = closed_port.getsockname()
    closed_port.close()
    with FaultProxy(target=target) as orphan:
        with socket.create_connection(("127.0.0.1", orphan.port), timeout=10) as c:
            assert c.recv(1) == b""
        assert orphan.stats().upstream_failures == 1
        with socket.create_connection(("127.0.0.1", orphan.port), timeout=10) as c:
            assert c.recv(1) == b""
        assert orphan.stats().upstream_failures == 2


def test_lifecycle_errors_are_plain(listener) -> None:
    p = FaultProxy(target=listener.getsockname())
    with pytest.raises(RuntimeError, match="not running"):
        p.cut()
    port = p.start()
    assert p.endpoint == f"tcp://127.0.0.1:{port}"
    with pytest.raises(RuntimeError, match="already started"):
        p.start()
    with pytest.raises(OSError):
        FaultProxy(listen_port=port, target=listener.getsockname()).start()
    with pytest.raises(ValueError, match="delay"):
        p.delay(-1)
    p.stop()
    p.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


# --- real ZeroMQ through the proxy --------------------------------------------------------


@pytest.fixture
def zmq_pair() -> Iterator[tuple[zmq.Socket, zmq.Socket, int]]:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.reconnect_ivl = 50
    dealer.reconnect_ivl_max = 200
    yield router, dealer, port
    router.close()
    dealer.close()
    ctx.term()


def exchange(router: zmq.Socket, dealer: zmq.Socket, body: bytes, timeout_s: float = 10.0) -> None:
    """Send ``body`` until the router gets it (the link may still be reconnecting), then reply."""
    deadline = time.monotonic() + timeout_s
    while True:
        dealer.send(body)
        if router.poll(200):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{body!r} never reached the router")
    while True:  # earlier attempts queued while reconnecting may arrive too
        ident, got = router.recv_multipart()
        if got == body:
            break
        assert router.poll(1000)
    router.send_multipart([ident, b"re:" + body])
    while True:
        assert dealer.poll(int(timeout_s * 1000)), f"no reply to {body!r}"
        if dealer.recv() == b"re:" + body:
            return


def test_zeromq_reconnects_by_itself_after_cut_and_restore(zmq_pair) -> None:
    router, dealer, port = zmq_pair
    with FaultProxy(target=("127.0.0.1", port)) as proxy:
        dealer.connect(proxy.endpoint)
        for i in range(3):
            exchange(router, dealer, b"before-%d" % i)

        proxy.cut()
        wait_for(lambda: proxy.stats().connections_refused >= 2, what="ZeroMQ to retry while cut")
        dealer.send(b"during-cut")
        assert not router.poll(int(SILENCE_S * 1000))

        proxy.restore()
        for i in range(3):
            exchange(router, dealer, b"after-%d" % i)
        assert proxy.stats().connections_open == 1


def test_zeromq_heartbeats_detect_a_blackhole(zmq_pair) -> None:
    router, dealer, port = zmq_pair
    dealer.setsockopt(zmq.HEARTBEAT_IVL, 100)
    dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 400)
    # a reconnect made inside the black hole loses its greeting; heartbeats only start after
    # the handshake, so without this it would stall for the default 30 s before dialling again
    dealer.setsockopt(zmq.HANDSHAKE_IVL, 500)
    with FaultProxy(target=("127.0.0.1", port)) as proxy:
        dealer.connect(proxy.endpoint)
        exchange(router, dealer, b"before")
        accepted = proxy.stats().connections_accepted

        proxy.blackhole()
        dealer.send(b"into the void")
        assert not router.poll(int(SILENCE_S * 1000))
        # the dealer hears no heartbeat replies, drops the connection and dials again
        wait_for(lambda: proxy.stats().connections_accepted > accepted, what="a heartbeat timeout")

        proxy.restore()
        exchange(router, dealer, b"after")

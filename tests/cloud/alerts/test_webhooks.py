from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import cloud.alerts.webhooks
from cloud.alerts.webhooks import WebhookSender, WebhookStats
from common.alerting import AlertEngine, ThresholdRule
from common.backoff import Backoff
from common.errors import ConfigError
from tests.waits import HANG_GUARD_S

WAIT_S = HANG_GUARD_S  # the bound of waits on conditions: the one hang guard (tests/waits.py), never a sleep


class Receiver:
    """A real HTTP server on 127.0.0.1 that answers ``status`` to its first ``fail_first`` POSTs, then 200."""

    def __init__(self, *, fail_first: int = 0, status: int = 500, hang: bool = False) -> None:
        self.fail_first, self.status, self.hang = fail_first, status, hang
        self.calls = 0
        self.received: list[dict[str, object]] = []
        self.keys: list[str | None] = []
        self.types: list[str | None] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends every hanging request
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.calls += 1
                    receiver.keys.append(self.headers.get("idempotency-key"))
                    failing = receiver.calls <= receiver.fail_first
                    if not failing and not receiver.hang:
                        receiver.types.append(self.headers.get("content-type"))
                        receiver.received.append(json.loads(body) if body else None)
                if receiver.hang:
                    receiver.release.wait(WAIT_S)
                    return
                self.send_response(receiver.status if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="receiver", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT_S)


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kw: object) -> Receiver:
        made.append(Receiver(**kw))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def refused_url() -> str:
    """A URL on a port nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as c:  # no proxy from the environment for 127.0.0.1
        yield c


class RecordingBackoff(Backoff):
    """A real Backoff with tiny delays that keeps the delays it gave."""

    def __init__(self) -> None:
        super().__init__(initial_s=0.001, max_s=0.01, multiplier=2.0, rng=random.Random(1))
        self.delays: list[float] = []
        self.resets = 0

    def next_delay(self) -> float:
        self.delays.append(super().next_delay())
        return self.delays[-1]

    def reset(self) -> None:
        self.resets += 1
        super().reset()


def event(i: int) -> dict[str, object]:
    return {"event": "fired", "alert_id": f"r:d{i}:{i}", "rule": "r", "subject": f"d{i}"}


def make_sender(urls: list[str], client: httpx.AsyncClient, **kw: object) -> WebhookSender:
    params: dict[str, object] = {"max_attempts": 5, "backoff": RecordingBackoff, **kw}
    return WebhookSender(urls, client=client, **params)  # type: ignore[arg-type]


async def wait_for(sender: WebhookSender, url: str | None = None) -> None:
    await asyncio.wait_for(sender.join(url), WAIT_S)


def test_all() -> None:
    assert cloud.alerts.webhooks.__all__ == ["WebhookSender", "WebhookStats"]


# --- retries -----------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_retries_after_failures_then_delivers(
    receiver: Callable[..., Receiver], client: httpx.AsyncClient,
) -> None:
    rx = receiver(fail_first=2)
    async with make_sender([rx.url], client) as sender:
        assert sender.submit(event(1)) == 1
        await wait_for(sender)
        assert rx.received == [event(1)]
        assert rx.types == ["application/json"]
        assert rx.calls == 3
        assert rx.keys == ["r:d1:1:fired"] * 3  # the same key on every attempt: receivers can dedupe
        s = sender.stats[rx.url]
        assert (s.delivered, s.failed, s.dropped, s.retries, s.queued) == (1, 0, 0, 2, 0)
        assert s.last_error == "HTTP 500"
        backoff = sender._backoff[rx.url]
        assert isinstance(backoff, RecordingBackoff)
        assert len(backoff.delays) == 2 and backoff.delays[1] > backoff.delays[0] / 2  # exponential, jittered
        assert backoff.attempts == 0  # reset once the event was done


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 503, 429, 408])
async def test_retryable_statuses(
    status: int, receiver: Callable[..., Receiver], client: httpx.AsyncClient,
) -> None:
    rx = receiver(fail_first=1, status=status)
    async with make_sender([rx.url], client) as sender:
        sender.submit(event(1))
        await wait_for(sender)
    assert (rx.calls, sender.stats[rx.url].delivered) == (2, 1)


@pytest.mark.anyio
async def test_gives_up_after_max_attempts(
    receiver: Callable[..., Receiver], client: httpx.AsyncClient,
) -> None:
    rx = receiver(fail_first=1000)
    async with make_sender([rx.url], client, max_attempts=3) as sender:
        sender.submit(event(1))
        sender.submit(event(2))
        await wait_for(sender)
    s = sender.stats[rx.url]
    assert (s.delivered, s.failed, s.retries) == (0, 2, 4)
    assert rx.calls == 6
    assert s.last_error == "HTTP 500"


@pytest.mark.anyio
async def test_a_refusing_receiver_is_not_retried(
    receiver: Callable[..., Receiver], client: httpx.AsyncClient,
) -> None:
    rx = receiver(fail_first=1, status=400)
    async with make_sender([rx.url], client) as sender:
        sender.submit(event(1))
        sender.submit(event(2))
        await wait_for(sender)
    assert rx.calls == 2
    assert rx.received == [event(2)]
    s = sender.stats[rx.url]
    assert (s.delivered, s.failed, s.retries, s.last_error) == (1, 1, 0, "HTTP 400")


@pytest.mark.anyio
async def test_connection_refused_is_retried_then_failed(refused_url: str, client: httpx.AsyncClient) -> None:
    async with make_sender([refused_url], client, max_attempts=3) as sender:
        sender.submit(event(1))
        await wait_for(sender)
    s = sender.stats[refused_url]
    assert (s.delivered, s.failed, s.retries) == (0, 1, 2)
    assert s.last_error is not None and s.last_error.startswith("ConnectError")


@pytest.mark.anyio
async def test_a_hanging_receiver_times_out(
    receiver: Callable[..., Receiver], client: httpx.AsyncClient,
) -> None:
    rx = receiver(hang=True)
    async with make_sender([rx.url], client, max_attempts=2, timeout_s=0.2) as sender:
        sender.submit(event(1))
        await wait_for(sender)
    s = sender.stats[rx.url]
    assert (s.delivered, s.failed, s.retries) == (0, 1, 1)
    assert s.last_error is not None and "Timeout" in s.last_error


@pytest.mark.anyio
async def test_events_reach_one_url_in_submit_order(
    receiver: Callable[..., Receiver], client: httpx.AsyncClient,
) -> None:
    rx = receiver(fail_first=3)
    async with make_sender([rx.url], client) as sender:
        for i in range(20):
            sender.submit(event(i))
        await wait_for(sender)
    assert rx.received == [event(i) for i in range(20)]


# --- isolation -----------------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize("down", ["refused", "hanging"])
async def test_a_down_webhook_does_not_delay_a_healthy_one(
    down: str, receiver: Callable[..., Receiver], refused_url: str, client: httpx.AsyncClient
) -> None:
    healthy = receiver()
    down_url = refused_url if down == "refused" else receiver(hang=True).url
    # the down URL would retry for a long time: 1000 attempts, a generous timeout
    async with make_sender([down_url, healthy.url], client, max_attempts=1000, timeout_s=WAIT_S) as sender:
        for i in range(10):
            assert sender.submit(event(i)) == 2  # the caller never waits for either
        await wait_for(sender, healthy.url)
        assert healthy.received == [event(i) for i in range(10)]
        assert sender.stats[healthy.url].delivered == 10
        stuck = sender.stats[down_url]
        assert (stuck.delivered, stuck.failed, stuck.queued) == (0, 0, 10)
    # stop() ended the stuck worker; its unsent events are counted, not lost silently
    assert (stuck.dropped, stuck.queued) == (10, 0)


@pytest.mark.anyio
async def test_a_full_queue_drops_and_counts(
    receiver: Callable[..., Receiver], client: httpx.AsyncClient,
) -> None:
    slow, fine = receiver(hang=True), receiver()
    sender = make_sender([slow.url, fine.url], client, queue_size=3, timeout_s=WAIT_S)
    sender.start()
    assert [sender.submit(event(i)) for i in range(3)] == [2, 2, 2]  # both queues now full
    assert sender.submit(event(3)) == 0
    assert (sender.stats[slow.url].dropped, sender.stats[fine.url].dropped) == (1, 1)
    await wait_for(sender, fine.url)
    await asyncio.wait_for(_until(lambda: slow.calls == 1), WAIT_S)  # slow's worker holds event 0
    taken = []
    for i in range(4, 9):
        taken.append(sender.submit(event(i)))
        await wait_for(sender, fine.url)
    assert taken == [2, 1, 1, 1, 1]  # slow: room for one more behind 1 and 2
    await sender.stop()
    s = sender.stats[slow.url]
    assert (s.delivered, s.failed, s.dropped, s.queued) == (0, 0, 1 + 4 + 4, 0)  # full, full, unsent at stop
    assert sender.stats[fine.url] == WebhookStats(delivered=8, dropped=1)
    t = sender.totals
    assert (t.delivered, t.failed, t.dropped, t.queued) == (8, 0, 10, 0)
    # every submitted event ended in exactly one counter of each URL
    for stats in sender.stats.values():
        assert stats.delivered + stats.failed + stats.dropped == 9


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)  # polling a condition set by the server thread


# --- lifecycle -----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_stop_can_drain_first(receiver: Callable[..., Receiver], client: httpx.AsyncClient) -> None:
    rx = receiver(fail_first=2)
    sender = make_sender([rx.url], client)
    for i in range(5):
        sender.submit(event(i))  # before start: queued, not sent
    assert sender.stats[rx.url].queued == 5
    sender.start()
    await sender.stop(drain_s=WAIT_S)
    assert rx.received == [event(i) for i in range(5)]
    assert sender.stats[rx.url] == WebhookStats(delivered=5, retries=2, last_error="HTTP 500")


@pytest.mark.anyio
async def test_stop_without_start_counts_the_queue_as_dropped(client: httpx.AsyncClient) -> None:
    sender = make_sender(["http://127.0.0.1:9/x"], client)
    sender.submit(event(1))
    await sender.stop()
    assert sender.stats["http://127.0.0.1:9/x"] == WebhookStats(dropped=1)


@pytest.mark.anyio
async def test_start_twice_is_an_error(client: httpx.AsyncClient) -> None:
    async with make_sender(["http://127.0.0.1:9/x"], client) as sender:
        with pytest.raises(RuntimeError):
            sender.start()


@pytest.mark.anyio
async def test_a_closed_client_fails_events_without_killing_the_worker(
    receiver: Callable[..., Receiver],
) -> None:
    rx = receiver()
    closed = httpx.AsyncClient(trust_env=False)
    await closed.aclose()
    async with make_sender([rx.url], closed, max_attempts=2) as sender:
        sender.submit(event(1))
        sender.submit(event(2))
        await wait_for(sender)
        assert sender.stats[rx.url].failed == 2
        assert all(not t.done() for t in sender._tasks)


@pytest.mark.parametrize(
    "urls, kw",
    [(["ftp://x/y"], {}), (["http:///x"], {}), (["x"], {}), (["http://x"], {"max_attempts": 0}),
     (["http://x"], {"queue_size": 0})],
)
def test_bad_settings_raise_config_error(urls: list[str], kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        WebhookSender(urls, client=httpx.AsyncClient(trust_env=False), **kw)  # type: ignore[arg-type]


# --- with the alert engine -------------------------------------------------------------------

@pytest.mark.anyio
async def test_alert_events_are_posted_as_their_dict(
    receiver: Callable[..., Receiver], client: httpx.AsyncClient
) -> None:
    rx = receiver(fail_first=1)
    engine = AlertEngine([ThresholdRule("battery_low", "battery_percent", "<", 15)])
    engine.observe_metric("d1", "battery_percent", 9, 1000)
    events = engine.tick(1000)
    engine.observe_metric("d1", "battery_percent", 50, 2000)
    events += engine.tick(2000)
    async with make_sender([rx.url], client) as sender:
        for e in events:
            sender.submit(e)
        await wait_for(sender)
    assert rx.received == [e.to_dict() for e in events]
    assert [e["event"] for e in rx.received] == ["fired", "resolved"]
    assert sender.stats[rx.url].delivered == 2

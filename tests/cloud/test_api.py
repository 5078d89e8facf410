"""The operator API: auth, health, and lists that show what the store holds.

Most tests call the app in-process through ``httpx.ASGITransport`` (starlette's
TestClient now warns when used with httpx); the last ones serve it for real.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cloud.api import create_app, serve_api
from cloud.store import Store
from common.errors import ConfigError
from common.protocol.messages import ForwardRecord

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    s.ingest("gw-1", "site-a", [ForwardRecord("d1", seq, 1000 + seq, "env", {"t": 1.0}) for seq in (1, 2, 3)], 500)
    s.ingest("gw-2", "site-b", [ForwardRecord("d2", 1, 1001, "env", {})], 600)
    yield s
    s.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["anyio-threads", "executor"])
async def client(request: pytest.FixtureRequest, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """The app with store calls in anyio's thread pool, or on one dedicated store thread."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="store") if request.param == "executor" else None
    app = create_app(store, TOKEN, executor=executor)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c
    if executor is not None:
        executor.shutdown()


@pytest.mark.anyio
async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/devices", "/v1/sites", "/v1/telemetry/summary"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
async def test_routes_refuse_a_missing_or_wrong_token(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    response = await client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized"
    assert "Authorization: Bearer <token>" in body["detail"] and "api_token" in body["detail"]


@pytest.mark.anyio
async def test_devices_lists_what_the_store_holds(client: httpx.AsyncClient, store: Store) -> None:
    response = await client.get("/v1/devices", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"devices": store.list_devices()}
    assert [d["device_id"] for d in response.json()["devices"]] == ["d1", "d2"]


@pytest.mark.anyio
async def test_sites_lists_what_the_store_holds(client: httpx.AsyncClient, store: Store) -> None:
    body = (await client.get("/v1/sites", headers=AUTH)).json()
    assert body == {"sites": store.list_sites()}
    assert [(s["site_id"], s["gateway_count"], s["device_count"]) for s in body["sites"]] == [
        ("site-a", 1, 1),
        ("site-b", 1, 1),
    ]


@pytest.mark.anyio
async def test_telemetry_summary(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/telemetry/summary", headers=AUTH)).json()
    assert (body["rows"], body["distinct"], body["duplicates_stored"]) == (4, 4, 0)
    assert body["devices"][0] == {"device_id": "d1", "count": 3, "min_seq": 1, "max_seq": 3}


@pytest.mark.anyio
async def test_store_failure_is_a_503_naming_the_cause(client: httpx.AsyncClient, store: Store) -> None:
    store.close()
    response = await client.get("/v1/devices", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert "listing devices failed" in response.json()["detail"]


def test_an_empty_token_is_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="non-empty token"):
        create_app(store, "")


# -- a real uvicorn in the current event loop ------------------------------------------------


@pytest.mark.anyio
async def test_serve_api_binds_port_0_answers_and_stops(store: Store) -> None:
    api = await serve_api(create_app(store, TOKEN), "127.0.0.1", 0)
    server, task, port = api  # also unpacks as a tuple
    assert port > 0 and server.started and not task.done()
    assert task.get_loop() is asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/v1/health")).json() == {"status": "ok"}
        assert (await http.get("/v1/devices")).status_code == 401
        assert len((await http.get("/v1/devices", headers=AUTH)).json()["devices"]) == 2
    await api.stop()
    assert task.done() and task.exception() is None
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/v1/health")


@pytest.mark.anyio
async def test_serve_api_on_a_busy_port_raises_config_error(store: Store) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve the operator API on 127.0.0.1:{port}"):
            await serve_api(create_app(store, TOKEN), "127.0.0.1", port)

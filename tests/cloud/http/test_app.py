"""The operator API: auth, health, lists that show what the store holds, site health, gaps and commands.

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

from cloud.http import ApiContext, ApiHooks, create_app, serve_api
from cloud.store import Store
from common.errors import ConfigError
from common.protocol.messages import ForwardRecord

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW_MS = 1_700_000_000_000


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    records = [ForwardRecord("d1", "bulk", seq, 1000 + seq, "env", {"t": 1.0}) for seq in (1, 2, 3, 7)]
    gap = {"stream": "bulk", "reason": "quota", "first": 4, "last": 5, "count": 2, "reporter": "gw-1"}
    status = {"link": "up", "backlog.bulk": 120}
    records += [ForwardRecord("d1", "critical", 0, 1500, "gap", gap), ForwardRecord("gw-1", "state", 0, 1600,
                "gateway.status", status)]
    s.telemetry.ingest("gw-1", "site-a", records, NOW_MS - 1_000)
    s.telemetry.ingest("gw-2", "site-b", [ForwardRecord("d2", "bulk", 1, 1001, "env", {})], 600)
    yield s
    s.close()


class Pushed:
    """An on_command hook that remembers what it was asked to push, and on which event loop."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.loops: list[asyncio.AbstractEventLoop] = []

    def __call__(self, device_id: str, seq: int) -> None:
        self.calls.append((device_id, seq))
        self.loops.append(asyncio.get_running_loop())


@pytest.fixture
def pushed() -> Pushed:
    return Pushed()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["anyio-threads", "executor"])
async def client(request: pytest.FixtureRequest, store: Store, pushed: Pushed) -> AsyncIterator[httpx.AsyncClient]:
    """The app with store calls in anyio's thread pool, or on one dedicated store thread."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="store") if request.param == "executor" else None
    app = create_app(ApiContext(store, TOKEN, executor=executor, now_ms=lambda: NOW_MS,
                                hooks=ApiHooks(on_command=pushed)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c
    if executor is not None:
        executor.shutdown()


@pytest.mark.anyio
async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    ["/v1/devices", "/v1/sites", "/v1/telemetry/summary", "/v1/sites/site-a", "/v1/gaps", "/v1/devices/d1/commands"],
)
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
    assert response.json() == {"devices": store.telemetry.list_devices(), "next_cursor": None}
    assert [d["device_id"] for d in response.json()["devices"]] == ["d1", "d2"]


@pytest.mark.anyio
async def test_devices_filtered_with_the_query_language(client: httpx.AsyncClient, store: Store) -> None:
    sites = {d["device_id"]: d["site_id"] for d in store.telemetry.list_devices()}
    response = await client.get("/v1/devices", params={"where": 'id = "d2" or site = "nowhere"'}, headers=AUTH)
    assert [d["device_id"] for d in response.json()["devices"]] == ["d2"]
    where = f'site = "{sites["d1"]}" and not id = "d2"'
    response = await client.get("/v1/devices", params={"where": where}, headers=AUTH)
    assert [d["device_id"] for d in response.json()["devices"]] == ["d1"]


@pytest.mark.anyio
async def test_a_bad_query_is_a_400_showing_where_the_mistake_is(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/devices", params={"where": 'site = "a" and and'}, headers=AUTH)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_query" and "position 15" in body["detail"] and "^" in body["detail"]


@pytest.mark.anyio
async def test_sites_lists_what_the_store_holds(client: httpx.AsyncClient, store: Store) -> None:
    body = (await client.get("/v1/sites", headers=AUTH)).json()
    assert body == {"sites": store.telemetry.list_sites(), "next_cursor": None}
    assert [(s["site_id"], s["gateway_count"], s["device_count"], s["links"]) for s in body["sites"]] == [
        ("site-a", 1, 1, {"gw-1": "up"}),
        ("site-b", 1, 1, {}),
    ]


@pytest.mark.anyio
async def test_telemetry_summary(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/telemetry/summary", headers=AUTH)).json()
    assert (body["rows"], body["distinct"], body["duplicates_stored"]) == (5, 5, 0)
    assert body["devices"][0] == {"device_id": "d1", "stream": "bulk", "count": 4, "min_seq": 1, "max_seq": 7}


@pytest.mark.anyio
async def test_site_detail(client: httpx.AsyncClient, store: Store) -> None:
    response = await client.get("/v1/sites/site-a", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert [g.pop("inventory") for g in body["gateways"]] == [None]  # the gateway reported no inventory here
    assert body == store.telemetry.site_detail("site-a", NOW_MS)
    assert body["gateways"][0]["status"] == {"link": "up", "backlog.bulk": 120}
    assert body["devices"] == {"total": 1, "online": 1, "online_within_ms": 300_000}


@pytest.mark.anyio
async def test_an_unknown_site_is_a_404_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/sites/atlantis", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": "No site by the id of 'atlantis' was found (`edgefleet sites list` shows the known ones)",
    }


@pytest.mark.anyio
async def test_gaps_with_totals_and_a_device_s_unexplained_ranges(client: httpx.AsyncClient, store: Store) -> None:
    everything = (await client.get("/v1/gaps", headers=AUTH)).json()
    assert everything == {"gaps": store.telemetry.gaps(), "totals": store.telemetry.gap_totals(), "next_cursor": None}
    assert [(g["device_id"], g["first_seq"], g["last_seq"]) for g in everything["gaps"]] == [("d1", 4, 5)]
    one = (await client.get("/v1/gaps", params={"device": "d1"}, headers=AUTH)).json()
    assert one["missing"] == {"bulk": [[6, 6]]}  # 4..5 were reported dropped; 6 is unexplained
    site_b = (await client.get("/v1/gaps", params={"site": "site-b"}, headers=AUTH)).json()
    assert site_b == {"gaps": [], "totals": [], "next_cursor": None}
    assert (await client.get("/v1/gaps", params={"device": "d2"}, headers=AUTH)).json()["missing"] == {}


@pytest.mark.anyio
async def test_create_and_list_commands(client: httpx.AsyncClient, store: Store, pushed: Pushed) -> None:
    response = await client.post(
        "/v1/devices/d1/commands", json={"name": "reboot", "args": {"delay": "5"}, "ttl_s": 60}, headers=AUTH
    )
    assert response.status_code == 201
    assert response.json() == {"device_id": "d1", "seq": 1, "expires_ms": NOW_MS + 60_000}
    second = await client.post("/v1/devices/d1/commands", json={"name": "ping"}, headers=AUTH)
    assert second.json() == {"device_id": "d1", "seq": 2, "expires_ms": NOW_MS + 3_600_000}
    # pushed at once, from the event loop that served the request
    assert pushed.calls == [("d1", 1), ("d1", 2)]
    assert pushed.loops == [asyncio.get_running_loop()] * 2
    body = (await client.get("/v1/devices/d1/commands", headers=AUTH)).json()
    assert body == {"commands": store.commands.list_commands("d1"), "next_cursor": None}
    assert [(c["seq"], c["name"], c["args"], c["status"]) for c in body["commands"]] == [
        (1, "reboot", {"delay": "5"}, "queued"),
        (2, "ping", {}, "queued"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_commands_of_an_unknown_device_are_a_404(client: httpx.AsyncClient, pushed: Pushed, method: str) -> None:
    response = await client.request(method, "/v1/devices/d404/commands", json={"name": "reboot"}, headers=AUTH)
    assert response.status_code == 404
    assert response.json()["detail"].startswith("No device by the id of 'd404' was found")
    assert pushed.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "body.name: Field required"),
        ({"name": ""}, "body.name: String should have at least 1 character"),
        ({"name": "x", "ttl_s": 0}, "body.ttl_s: Input should be greater than 0"),
        ({"name": "x", "args": {"k": 1}}, "body.args.k: Input should be a valid string"),
        ({"name": "x", "args": {f"k{i}": "v" for i in range(65)}}, "body.args: Dictionary should have at most 64"),
        ({"name": "x", "extra": 1}, "body.extra: Extra inputs are not permitted"),
    ],
)
async def test_a_bad_command_body_is_a_422_naming_the_field(
    client: httpx.AsyncClient, store: Store, body: dict[str, object], problem: str
) -> None:
    response = await client.post("/v1/devices/d1/commands", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert problem in response.json()["detail"]
    assert store.commands.list_commands("d1") == []


@pytest.mark.anyio
async def test_a_failing_push_hook_does_not_fail_the_stored_command(store: Store) -> None:
    def broken(_device_id: str, _seq: int) -> None:
        raise RuntimeError("gateway socket closed")

    app = create_app(ApiContext(store, TOKEN, hooks=ApiHooks(on_command=broken)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        response = await c.post("/v1/devices/d1/commands", json={"name": "reboot"}, headers=AUTH)
    assert response.status_code == 201
    assert [c["status"] for c in store.commands.list_commands("d1")] == ["queued"]


@pytest.mark.anyio
async def test_store_failure_is_a_503_naming_the_cause(client: httpx.AsyncClient, store: Store) -> None:
    store.close()
    response = await client.get("/v1/devices", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert "listing devices failed" in response.json()["detail"]


def test_an_empty_token_is_refused(store: Store) -> None:
    with pytest.raises(ConfigError, match="non-empty token"):
        create_app(ApiContext(store, ""))


# -- a real uvicorn in the current event loop ------------------------------------------------


@pytest.mark.anyio
async def test_serve_api_binds_port_0_answers_and_stops(store: Store) -> None:
    api = await serve_api(create_app(ApiContext(store, TOKEN)), "127.0.0.1", 0)
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
            await serve_api(create_app(ApiContext(store, TOKEN)), "127.0.0.1", port)

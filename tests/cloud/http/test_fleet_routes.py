"""The fleet routes of the operator API, in-process: what they answer, and the typed error of each refusal
(unknown device or group 404, a transition the table forbids 409, a bad query 400 with its position)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cloud.http import ApiContext, create_app
from cloud.store import Store
from common.protocol.messages import ForwardRecord

TOKEN = "fleet-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW_MS = 1_700_000_000_000


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    status = {"link": "down", "backlog.bulk.bytes": 4096, "backlog.critical.bytes": 1024}
    s.telemetry.ingest("gw-1", "site-a", [
        ForwardRecord("d1", "state", 1, NOW_MS - 5_000, "inventory", {"firmware_version": "1.0.0", "model": "m1"}),
        ForwardRecord("d1", "bulk", 1, NOW_MS - 5_000, "metrics", {"cpu_percent": 5.0}),
        ForwardRecord("gw-1", "state", 0, NOW_MS, "gateway.status", status),
    ], NOW_MS - 1_000)
    s.telemetry.ingest("gw-1", "site-a", [ForwardRecord("d2", "bulk", 1, NOW_MS, "metrics", {})], NOW_MS - 900_000)
    s.metrics.follow_all()  # the metrics follower, as the cloud runs it
    yield s
    s.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ApiContext(store, TOKEN, now_ms=lambda: NOW_MS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", headers=AUTH) as c:
        yield c


@pytest.mark.anyio
async def test_fleet_routes_need_the_token(store: Store) -> None:
    app = create_app(ApiContext(store, TOKEN, now_ms=lambda: NOW_MS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        assert (await c.get("/v1/fleet/devices")).status_code == 401


@pytest.mark.anyio
async def test_refusals_are_typed_and_say_what_to_do(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/devices/nope/tags", json={"add": ["x"]})
    assert r.status_code == 404 and "edgefleet devices list" in r.json()["detail"]
    r = await client.post("/v1/devices/d1/state", json={"state": "retired", "reason": "x"})
    assert r.status_code == 200 and r.json()["to_state"] == "retired"
    r = await client.post("/v1/devices/d1/state", json={"state": "active"})
    assert (r.status_code, r.json()["error"]) == (409, "transition_refused")
    r = await client.post("/v1/groups", json={"name": "g", "kind": "dynamic", "query": "tag:x and"})
    assert r.status_code == 400 and "position" in r.json()["detail"]
    r = await client.post("/v1/groups/none/members", json={"add": ["d2"]})
    assert r.status_code == 404
    r = await client.post("/v1/config/set", json={"layer": "planet:earth", "key": "k", "value": 1})
    assert r.status_code == 400 and "global, site:NAME" in r.json()["detail"]
    r = await client.get("/v1/metrics")
    assert r.status_code == 400 and "name a device" in r.json()["detail"]
    r = await client.get("/v1/config/explain/nope")
    assert r.status_code == 404


@pytest.mark.anyio
async def test_a_dry_run_changes_nothing_and_a_set_queues_config(client: httpx.AsyncClient, store: Store) -> None:
    r = await client.post("/v1/config/set", json={"layer": "site:site-a", "key": "rate", "value": 2, "dry_run": True})
    assert r.json()["changed"] == {"d1": ["rate"], "d2": ["rate"]} and store.fleet.layers() == []
    r = await client.post("/v1/config/set", json={"layer": "site:site-a", "key": "rate", "value": 2})
    assert [q["device_id"] for q in r.json()["queued"]] == ["d1", "d2"]
    assert [c["name"] for c in store.commands.list_commands("d1")] == ["config"]
    explain = (await client.get("/v1/config/explain/d1")).json()
    assert explain["keys"] == [{"key": "rate", "value": 2, "layer": "site:site-a", "locked_by": None, "refused": []}]
    assert explain["drift"] is True and explain["applied_version"] is None


@pytest.mark.anyio
async def test_sites_at_a_glance_and_metrics(client: httpx.AsyncClient) -> None:
    [site] = (await client.get("/v1/fleet/sites")).json()["sites"]
    per_stream = {s: site["backlog"][s]["bytes"] for s in ("critical", "state", "bulk")}
    assert sum(per_stream.values()) == 5120 and site["gateways"][0].pop("backlog")["bulk"]["bytes"] == per_stream["bulk"]
    assert site.pop("backlog") and site.pop("oldest_age_s") >= 0
    assert site == {
        "site_id": "site-a",
        "gateways": [{"gateway_id": "gw-1", "link": "down", "backlog_bytes": 5120, "last_seen_ms": NOW_MS - 1_000}],
        "devices": {"total": 2, "online": 1, "offline": 1},
        "firmware": {"1.0.0": 1},
        "open_alerts": 0,
        "backlog_bytes": 5120,
    }
    body = (await client.get("/v1/metrics", params={"device": "d1", "since_ms": NOW_MS - 60_000})).json()
    assert body["tier"] == "raw" and [(p["metric"], p["value"]) for p in body["points"]] == [("cpu_percent", 5.0)]
    ghosts = (await client.get("/v1/ghosts", params={"silent_s": 600})).json()
    assert [g["device_id"] for g in ghosts["ghosts"]] == ["d2"]

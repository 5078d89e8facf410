"""What unauthenticated traffic and large bodies cost the cloud (issue 15, points 4 and 5): no audit row and one
generic 401 text, a per-source limit (429), a 413 naming the limit before the body is parsed, the role checked
before any body is read, and the audit log paged and filtered in SQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.http import ApiContext, create_app
from cloud.http.access import DEFAULT_BODY_LIMIT, FAILURES_PER_MINUTE, GENERIC_401
from cloud.security.service import Actor, SecurityService
from cloud.store import Store
from common.protocol.messages import ForwardRecord

BOOT = "bootstrap-token-for-bodies"
NOW_MS = 1_700_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    s.telemetry.ingest("gw-1", "site-a", [ForwardRecord("d1", "bulk", 1, 1001, "env", {})], NOW_MS - 1000)
    yield s
    s.close()


@pytest.fixture
async def api(store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="store")
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate())
    app = create_app(ApiContext(store, BOOT, executor=executor, now_ms=lambda: NOW_MS, security=service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 4000)),
                                 base_url="http://api") as c:
        yield c, app
    executor.shutdown()


def boot() -> dict[str, str]:
    return {"Authorization": f"Bearer {BOOT}"}


@pytest.mark.anyio
async def test_unauthenticated_requests_write_nothing_say_one_thing_and_are_limited_per_source(api, store) -> None:
    c, app = api
    before = store.security.audit_count()
    answers = set()
    for auth in ("", "Bearer nope", "Bearer ef_0011223344556677_guess", "Basic x"):
        r = await c.post("/v1/devices/d1/revoke", json={}, headers={"Authorization": auth} if auth else {})
        assert r.status_code == 401
        answers.add(r.json()["detail"])
    assert answers == {GENERIC_401}  # an unknown token id and a malformed one read the same
    assert store.security.audit_count() == before  # no synced write for an unauthenticated request
    for _ in range(FAILURES_PER_MINUTE):
        await c.get("/v1/devices", headers={"Authorization": "Bearer wrong"})
    r = await c.get("/v1/devices", headers=boot())  # even a good token from that source waits out the minute
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    stats = app.state.access
    assert stats.unauthenticated == FAILURES_PER_MINUTE and stats.rate_limited >= 1


@pytest.mark.anyio
async def test_a_body_over_its_routes_limit_is_413_naming_it_and_the_role_comes_first(api, store) -> None:
    c, _ = api
    big = b'{"name": "x", "args": {"k": "' + b"v" * DEFAULT_BODY_LIMIT + b'"}}'
    r = await c.post("/v1/devices/d1/commands", content=big, headers={**boot(), "content-type": "application/json"})
    assert r.status_code == 413 and str(DEFAULT_BODY_LIMIT) in r.json()["detail"]

    async def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(DEFAULT_BODY_LIMIT // 65536 + 2):
            yield b" " * 65536

    r = await c.post("/v1/devices/d1/commands", content=chunks(), headers={**boot(), "content-type": "application/json"})
    assert r.status_code == 413
    # a viewer's users request is refused on its role before its (malformed, huge) body is read
    await c.post("/v1/users", json={"user_id": "vic", "role": "viewer"}, headers=boot())
    token = (await c.post("/v1/tokens", json={"user_id": "vic"}, headers=boot())).json()["token"]
    r = await c.post("/v1/users", content=b"{not json" + b" " * (2 * DEFAULT_BODY_LIMIT),
                     headers={"Authorization": f"Bearer {token}", "content-type": "application/json"})
    assert r.status_code == 403 and "users.manage needs admin" in r.json()["detail"]


@pytest.mark.anyio
async def test_the_audit_log_is_paged_and_filtered_in_sql_and_still_verified(api, store) -> None:
    c, _ = api
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate())
    for i in range(25):
        service.audit(Actor("ann" if i % 2 else "bob", "test"), f"devices.x{i % 3}", f"t{i}", True, "", NOW_MS + i)
    seen, cursor = [], None
    while True:
        params = {"who": "ann", "action": "devices.x1", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await c.get("/v1/audit", params=params, headers=boot())).json()
        assert body["verified"] and body["total"] == 25
        seen += [r["target"] for r in body["records"]]
        if not (cursor := body["next_cursor"]):
            break
    want = [f"t{i}" for i in range(25) if i % 2 and i % 3 == 1]
    assert seen == want
    newest = (await c.get("/v1/audit", params={"newest_first": "true", "limit": 3}, headers=boot())).json()
    assert [r["target"] for r in newest["records"]] == ["t24", "t23", "t22"]
    nxt = (await c.get("/v1/audit", params={"newest_first": "true", "limit": 3, "cursor": newest["next_cursor"]},
                       headers=boot())).json()
    assert [r["target"] for r in nxt["records"]] == ["t21", "t20", "t19"]
    assert (await c.get("/v1/audit", params={"action": "devices_x"}, headers=boot())).json()["records"] == []


@pytest.mark.anyio
async def test_bad_query_input_is_a_typed_400(api) -> None:
    c, _ = api
    for path in ("/v1/devices", "/v1/fleet/devices"):
        r = await c.get(path, params={"where": "attr.x > " + "9" * 5000}, headers=boot())
        assert r.status_code == 400 and r.json()["error"] == "invalid_query", r.text
    r = await c.get("/v1/audit", params={"cursor": "WyJ4Il0"}, headers=boot())  # a cursor naming no seq
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"

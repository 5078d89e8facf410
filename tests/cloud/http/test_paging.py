"""Pagination on every list route (``limit``, ``cursor`` -> ``next_cursor``) and the one error body for
errors Starlette raises itself (an unknown path, a method a route does not take)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from cloud.http import ApiContext, create_app
from cloud.http.paging import decode_cursor, encode_cursor, paginate
from cloud.security.service import SecurityService
from cloud.store import Store
from common.errors import ConfigError
from common.protocol.messages import ForwardRecord

TOKEN = "paging-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW_MS = 1_700_000_000_000


@given(st.lists(st.integers(0, 50), unique=True), st.integers(1, 7), st.booleans())
def test_following_next_cursor_returns_every_row_once_in_order(keys: list[int], limit: int, descending: bool) -> None:
    rows = [{"k": k} for k in keys]
    seen, cursor = [], None
    while True:
        page, cursor = paginate(rows, key=lambda r: (r["k"],), limit=limit, cursor=cursor, descending=descending)
        assert len(page) <= limit
        seen += page
        if cursor is None:
            break
    assert [r["k"] for r in seen] == sorted(keys, reverse=descending)


def test_a_page_follows_its_row_even_when_rows_were_added_before_it() -> None:
    rows = [{"k": f"d{i}"} for i in (1, 3, 5)]
    page, cursor = paginate(rows, key=lambda r: (r["k"],), limit=2, cursor=None)
    assert [r["k"] for r in page] == ["d1", "d3"]
    rows.insert(0, {"k": "d0"})  # a row before the cursor arrives: the next page neither repeats nor skips
    page, cursor = paginate(rows, key=lambda r: (r["k"],), limit=2, cursor=cursor)
    assert [r["k"] for r in page] == ["d5"] and cursor is None


def test_position_paging_and_cursor_round_trip() -> None:
    page, cursor = paginate(["c", "a", "b"], key=None, limit=2, cursor=None)
    assert page == ["c", "a"] and paginate(["c", "a", "b"], key=None, limit=2, cursor=cursor) == (["b"], None)
    assert decode_cursor(encode_cursor(("dev-1", 7))) == ("dev-1", 7)
    for bad in ("%%%", encode_cursor(()).replace("W", "e"), "eyJhIjoxfQ"):  # not base64, not JSON, not a list
        with pytest.raises(ConfigError, match="cursor"):
            decode_cursor(bad)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    for i in range(7):
        site = f"site-{i % 3}"
        s.telemetry.ingest(f"gw-{site}", site, [ForwardRecord(f"d{i}", "bulk", 1, NOW_MS - 5000, "env", {"t": 1.0})],
                           NOW_MS - 1000)
    yield s
    s.close()


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="store")
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate())
    app = create_app(ApiContext(store, TOKEN, executor=executor, now_ms=lambda: NOW_MS, security=service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        for n in range(5):  # commands and audit records to page through
            assert (await c.post("/v1/devices/d1/commands", json={"name": f"c{n}"}, headers=AUTH)).status_code == 201
        yield c
    executor.shutdown()


LISTS = [("/v1/devices", "devices"), ("/v1/fleet/devices", "devices"), ("/v1/sites", "sites"),
         ("/v1/fleet/sites", "sites"), ("/v1/devices/d1/commands", "commands"), ("/v1/audit", "records"),
         ("/v1/config/status", "devices"), ("/v1/telemetry/summary", "devices")]


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "field"), LISTS)
async def test_list_routes_page_through_everything_they_list(client: httpx.AsyncClient, path: str, field: str) -> None:
    whole = (await client.get(path, headers=AUTH)).json()
    assert whole["next_cursor"] is None and len(whole[field]) >= 3
    rows: list[Any] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await client.get(path, params=params, headers=AUTH)).json()
        assert len(body[field]) <= 2
        rows += body[field]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert rows == whole[field]


@pytest.mark.anyio
async def test_every_list_route_in_the_document_takes_limit_and_cursor(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    lists = []
    for path, item in doc["paths"].items():
        op = item.get("get")
        if op is None or "200" not in op["responses"] or path.endswith("}"):  # one object's detail, not a list
            continue
        ref = op["responses"]["200"]["content"].get("application/json", {}).get("schema", {}).get("$ref", "")
        props = schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
        if any(p.get("type") == "array" for p in props.values()):
            lists.append(path)
            names = {p["name"] for p in op.get("parameters", [])}
            assert {"limit", "cursor"} <= names and "next_cursor" in props, path
    assert len(lists) >= 17  # (releases and rollouts are not mounted in this app: no service for them)


@pytest.mark.anyio
async def test_starlette_s_own_errors_have_the_one_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/no-such-route", headers=AUTH)
    assert r.status_code == 404 and set(r.json()) == {"error", "detail"} and r.json()["error"] == "not_found"
    r = await client.delete("/v1/devices", headers=AUTH)
    assert r.status_code in (403, 405) and set(r.json()) == {"error", "detail"}
    r = await client.get("/v1/devices", params={"cursor": "%%%"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request" and "cursor" in r.json()["detail"]

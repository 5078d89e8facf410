"""DDI TargetTokens on the real API app: issued once (only the SHA-256 kept), site-scoped, revocable, audited,
and each change handed to the hook that sends the site's gateways their table."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.http import ApiContext, ApiHooks, create_app
from cloud.security.service import SecurityService
from cloud.store import Store

BOOT = "bootstrap-token-for-tests"
NOW_MS = 1_700_000_000_000


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    yield s
    s.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    changed: list[str] = []
    executor = ThreadPoolExecutor(1, thread_name_prefix="store")
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate())
    app = create_app(ApiContext(store, BOOT, executor=executor, now_ms=lambda: NOW_MS, security=service,
                                hooks=ApiHooks(on_ddi_tokens=changed.append)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c, changed
    executor.shutdown()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_issue_scope_revoke_and_the_table_the_gateway_gets(client, store: Store) -> None:
    c, changed = client
    r = await c.post("/v1/ddi-tokens", json={"device_id": "ddi-1", "site": "site-a", "hw": "imx8"}, headers=auth(BOOT))
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert token.startswith("ddi_") and changed == ["site-a"]
    version, rows = store.ddi.site_credentials("site-a")
    assert rows == [{"device_id": "ddi-1", "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "hw": "imx8"}]
    assert token not in str(store.ddi.list_tokens())  # the token itself is never stored
    # a scoped operator issues for its own site only
    await c.post("/v1/users", json={"user_id": "otto", "role": "operator", "sites": ["site-b"]}, headers=auth(BOOT))
    op = (await c.post("/v1/tokens", json={"user_id": "otto"}, headers=auth(BOOT))).json()["token"]
    r = await c.post("/v1/ddi-tokens", json={"device_id": "ddi-2", "site": "site-a"}, headers=auth(op))
    assert r.status_code == 403 and "outside scope" in r.json()["detail"]
    assert (await c.post("/v1/ddi-tokens/ddi-1/revoke", headers=auth(op))).status_code == 403
    # revoked: gone from the table, under a newer version
    assert (await c.post("/v1/ddi-tokens/ddi-1/revoke", headers=auth(BOOT))).json()["revoked"] is True
    newer, rows = store.ddi.site_credentials("site-a")
    assert rows == [] and newer > version and changed == ["site-a", "site-a"]
    assert (await c.post("/v1/ddi-tokens/ddi-1/revoke", headers=auth(BOOT))).status_code == 404
    actions = [(a.action, a.result) for a in store.security.audit_records()]
    assert ("ddi_tokens.issue", "allowed") in actions and ("ddi_tokens.revoke", "allowed") in actions
    assert ("ddi_tokens.issue", "refused") in actions and ("ddi_tokens.revoke", "refused") in actions
    listed = (await c.get("/v1/ddi-tokens", headers=auth(BOOT))).json()["tokens"]
    assert [(t["device_id"], t["revoked_ms"]) for t in listed] == [("ddi-1", NOW_MS)]

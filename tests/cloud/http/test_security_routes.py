"""Operator access on the real API app: tokens (hashed), roles, site scopes, deny by default, and an audit
record for every mutating request, allowed or refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.http import ApiContext, ApiHooks, create_app
from cloud.http.access import GENERIC_401
from cloud.security.audit import verify_chain
from cloud.security.service import SecurityService
from cloud.store import Store
from common.protocol.messages import ForwardRecord

BOOT = "bootstrap-token-for-tests"
NOW_MS = 1_700_000_000_000


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    s.telemetry.ingest("gw-1", "site-a", [ForwardRecord("d1", "bulk", 1, 1001, "env", {})], NOW_MS - 1000)
    s.telemetry.ingest("gw-2", "site-b", [ForwardRecord("d2", "bulk", 1, 1001, "env", {})], NOW_MS - 1000)
    yield s
    s.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[tuple[httpx.AsyncClient, list[bytes]]]:
    pushed: list[bytes] = []
    executor = ThreadPoolExecutor(1, thread_name_prefix="store")
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate())
    app = create_app(ApiContext(store, BOOT, executor=executor, now_ms=lambda: NOW_MS, security=service,
                                hooks=ApiHooks(on_revocations=pushed.append)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        yield c, pushed
    executor.shutdown()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_token(c: httpx.AsyncClient, user: str, role: str, sites: list[str] | None = None) -> str:
    r = await c.post("/v1/users", json={"user_id": user, "role": role, "sites": sites}, headers=auth(BOOT))
    assert r.status_code == 201, r.text
    r = await c.post("/v1/tokens", json={"user_id": user}, headers=auth(BOOT))
    assert r.status_code == 201, r.text
    assert r.json()["token"].startswith("ef_")
    return r.json()["token"]


@pytest.mark.anyio
async def test_roles_and_sites_are_enforced_and_every_mutation_is_audited(client, store: Store) -> None:
    c, pushed = client
    viewer = await make_token(c, "vera", "viewer")
    op_a = await make_token(c, "otto", "operator", ["site-a"])
    # a viewer reads but cannot act
    assert (await c.get("/v1/devices", headers=auth(viewer))).status_code == 200
    r = await c.post("/v1/devices/d1/commands", json={"name": "reboot"}, headers=auth(viewer))
    assert r.status_code == 403 and "devices.command needs operator" in r.json()["detail"]
    # an operator of site-a acts on site-a only
    assert (await c.post("/v1/devices/d1/commands", json={"name": "reboot"}, headers=auth(op_a))).status_code == 201
    r = await c.post("/v1/devices/d2/commands", json={"name": "reboot"}, headers=auth(op_a))
    assert r.status_code == 403 and "outside scope" in r.json()["detail"]
    r = await c.post("/v1/enroll-tokens", json={"site": "site-b", "uses": 5}, headers=auth(op_a))
    assert r.status_code == 403
    r = await c.post("/v1/enroll-tokens", json={"site": "site-a", "uses": 5}, headers=auth(op_a))
    assert r.status_code == 201 and r.json()["token"].startswith("ect_")
    # a scoped operator cannot manage users; a forged token is not a principal
    assert (await c.post("/v1/users", json={"user_id": "eve", "role": "admin"}, headers=auth(op_a))).status_code == 403
    r = await c.post("/v1/devices/d1/revoke", json={}, headers=auth("ef_0011223344556677_forged"))
    assert r.status_code == 401
    # a revocation is signed and handed to the push hook
    r = await c.post("/v1/devices/d1/revoke", json={"reason": "stolen"}, headers=auth(op_a))
    assert r.status_code == 200 and r.json()["revoked"] == {"d1": "stolen"} and len(pushed) == 1
    # the token is stored hashed: the secret appears nowhere in the store
    secret = op_a.split("_", 2)[2]
    assert secret not in repr(store.security.api_token(op_a.split("_")[1]))

    records = store.security.audit_records()
    verify_chain(records)
    seen = [(r.who, r.action, r.result) for r in records]
    assert ("vera", "devices.command", "refused") in seen
    assert ("otto", "devices.command", "allowed") in seen
    assert ("otto", "enroll_tokens.create", "refused") in seen and ("otto", "enroll_tokens.create", "allowed") in seen
    assert ("otto", "users.manage", "refused") in seen
    assert not [r for r in records if r.who == "<unauthenticated>"]  # unauthenticated traffic writes nothing
    assert ("otto", "devices.revoke", "allowed") in seen
    # the audit route shows the chain, verified; a viewer may not read it
    assert (await c.get("/v1/audit", headers=auth(viewer))).status_code == 403
    body = (await c.get("/v1/audit", headers=auth(BOOT))).json()
    assert body["verified"] and body["total"] == len(records)


@pytest.mark.anyio
async def test_an_unmapped_mutating_route_needs_admin(client) -> None:
    c, _ = client
    op = await make_token(c, "olga", "operator")
    r = await c.post("/v1/no-such-route", json={}, headers=auth(op))
    assert r.status_code == 403 and "api.unmapped needs admin" in r.json()["detail"]


@pytest.mark.anyio
async def test_a_request_allowed_by_role_but_refused_by_its_route_is_audited_as_refused(client, store: Store) -> None:
    c, _ = client
    r = await c.post("/v1/devices/d1/commands", json={"name": ""}, headers=auth(BOOT))  # invalid body
    assert r.status_code == 422
    rec = store.security.audit_records()[-1]
    assert (rec.who, rec.action, rec.result) == ("bootstrap-admin", "devices.command", "refused")
    assert "HTTP 422" in rec.detail


@pytest.mark.anyio
async def test_revoked_api_and_claim_tokens_stop_working_at_once(client) -> None:
    c, _ = client
    op = await make_token(c, "oscar", "operator")
    assert (await c.get("/v1/devices", headers=auth(op))).status_code == 200  # now cached
    token_id = op.split("_")[1]
    assert (await c.post(f"/v1/tokens/{token_id}/revoke", headers=auth(BOOT))).status_code == 200
    r = await c.get("/v1/devices", headers=auth(op))
    assert r.status_code == 401 and r.json()["detail"] == GENERIC_401  # the same text whatever the reason
    claim = (await c.post("/v1/enroll-tokens", json={"site": "site-a"}, headers=auth(BOOT))).json()
    assert (await c.post(f"/v1/enroll-tokens/{claim['token_id']}/revoke", headers=auth(BOOT))).status_code == 200
    assert (await c.post("/v1/enroll-tokens/0000/revoke", headers=auth(BOOT))).status_code == 404

"""Every operator route has an action and a site rule (``cloud.http.scope.ROUTES``), and none lets a principal
of site A read or touch site B.

The enumeration test reads the app's own routes (its OpenAPI document and ``/metrics``): a route added without
a rule fails it, and so does a rule left behind by a removed route. The matrix test runs each route as an admin
scoped to site A, with path parameters, query parameters and bodies that name site B's device, gateway and
site, and asserts a refusal (403, 404) or an answer that holds nothing of site B; then that site B's data did
not change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.http import ApiContext, create_app
from cloud.http.scope import ROUTES, match
from cloud.metrics import CloudMetrics
from cloud.releases.artifacts import ArtifactStore
from cloud.releases.plan import ReleaseSettings
from cloud.releases.service import ReleaseService
from cloud.rollouts.service import RolloutService
from cloud.security.service import SecurityService
from cloud.store import Store
from common.protocol.messages import ForwardRecord

BOOT = "bootstrap-token-for-route-scope"
NOW_MS = 1_700_000_000_000
B_MARKERS = ("dev-b", "gw-b", "site-b", "secret-b")  # nothing of these may reach a principal of site A
PARAMS = {"device_id": "dev-b", "site": "site-b", "name": "grp-b", "alert_id": "alert-b", "version": "1.0.0",
          "token_id": "0011223344556677", "rollout_id": "r-b", "action": "pause"}
# a body per mutating route, naming site B wherever it can (the routes of rule "self" read their site from it)
BODIES: dict[tuple[str, str], object] = {
    ("POST", "/v1/devices/{device_id}/commands"): {"name": "reboot", "args": {"k": "v"}},
    ("POST", "/v1/alerts/{alert_id}/ack"): {"by": "eve"},
    ("POST", "/v1/silences"): {"target": "dev-b", "for_s": 600},
    ("POST", "/v1/devices/{device_id}/tags"): {"add": ["evil"]},
    ("POST", "/v1/devices/{device_id}/state"): {"state": "retired"},
    ("POST", "/v1/groups"): {"name": "grp-x", "kind": "static"},
    ("POST", "/v1/groups/{name}/members"): {"add": ["dev-b"]},
    ("POST", "/v1/config/set"): {"layer": "site:site-b", "key": "k", "value": "v"},
    ("POST", "/v1/enroll-tokens"): {"site": "site-b", "uses": 5},
    ("POST", "/v1/preauthorizations"): {"devices": [{"serial": "sn-x", "site": "site-b"}]},
    ("POST", "/v1/devices/{device_id}/revoke"): {"reason": "x"},
    ("POST", "/v1/devices/{device_id}/quarantine"): {"reason": "x"},
    ("POST", "/v1/users"): {"user_id": "eve2", "role": "admin"},
    ("POST", "/v1/tokens"): {"user_id": "bob"},
    ("POST", "/v1/ddi-tokens"): {"device_id": "dev-b2", "site": "site-b"},
    ("POST", "/v1/rollouts"): {"release": "1.0.0", "selector": {"sites": ["site-b"]}},
    ("POST", "/v1/rollouts/dry-run"): {"release": "1.0.0", "selector": {"sites": ["site-b"]}},
}
QUERIES = {"site": "site-b", "device": "dev-b", "subject": "dev-b"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _store(tmp_path: Path) -> Store:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    for gw, site, dev in (("gw-a", "site-a", "dev-a"), ("gw-b", "site-b", "dev-b")):
        s.telemetry.ingest(gw, site, [ForwardRecord(dev, "bulk", 1, NOW_MS - 5000, "env", {"t": 1.0}),
                                      ForwardRecord(dev, "bulk", 2, NOW_MS - 4000, "log", {"msg": f"secret-{site[-1]}"}),
                                      ForwardRecord(dev, "bulk", 5, NOW_MS - 3000, "update", {"result": "committed"})],
                           NOW_MS - 1000)
        s.commands.create_command(dev, "reboot", {"why": f"secret-{site[-1]}"}, NOW_MS + 60_000, NOW_MS)
        s.alerts.save_alerts([{"id": f"alert-{site[-1]}", "rule": "offline", "type": "threshold", "subject": dev,
                               "severity": "warning", "state": "open", "opened_ms": NOW_MS, "resolved_ms": None,
                               "last_event": "opened", "last_event_ms": NOW_MS, "detail": {}}])
        s.alerts.add_silence(gw, NOW_MS + 600_000, "ops", "maintenance", NOW_MS)
        s.security.preauthorize(f"sn-{site}", site, None, NOW_MS)
    return s


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Store, str]]:
    store = _store(tmp_path)
    executor = ThreadPoolExecutor(1, thread_name_prefix="store")
    security = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate())
    releases = ReleaseService(store.releases, ArtifactStore(tmp_path / "artifacts"), {}, ReleaseSettings(),
                              store_executor=executor)
    rollouts = RolloutService(store.rollouts, executor, lambda d, s: None, commands=store.commands,
                              releases=store.releases, telemetry=store.telemetry, now_ms=lambda: NOW_MS)
    app = create_app(ApiContext(store, BOOT, executor=executor, now_ms=lambda: NOW_MS, security=security,
                                releases=releases, rollouts=rollouts, metrics=CloudMetrics()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        boot = {"Authorization": f"Bearer {BOOT}"}
        r = await c.post("/v1/ddi-tokens", json={"device_id": "dev-b", "site": "site-b"}, headers=boot)
        assert r.status_code == 201, r.text
        await c.post("/v1/groups", json={"name": "grp-b", "kind": "static"}, headers=boot)
        for user, sites in (("amy", ["site-a"]), ("bob", ["site-b"])):
            assert (await c.post("/v1/users", json={"user_id": user, "role": "admin", "sites": sites},
                                 headers=boot)).status_code == 201
        r = await c.post("/v1/tokens", json={"user_id": "amy"}, headers=boot)
        yield c, store, r.json()["token"]
    executor.shutdown()
    store.close()


def app_routes(app_: object) -> set[tuple[str, str]]:
    doc = app_.openapi()  # type: ignore[attr-defined]
    found = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if p != "/v1/health"}
    return found | {("GET", "/metrics")}  # served beside the API (cloud.http.prometheus), outside the document


@pytest.mark.anyio
async def test_every_route_of_the_app_has_a_rule_and_every_rule_a_route(api) -> None:
    c, _, _ = api
    routes = app_routes(c._transport.app)  # noqa: SLF001 -- the app under test
    assert len(routes) >= 55
    assert sorted(routes - set(ROUTES)) == [], "routes without an action and site rule in cloud.http.scope.ROUTES"
    assert sorted(set(ROUTES) - routes) == [], "rules in cloud.http.scope.ROUTES for routes the app no longer has"
    for method, template in routes:  # the middleware finds each template's own rule from a concrete path
        concrete = template.format(**PARAMS)
        found = match(method, concrete)
        assert found is not None and found[0] == template, (method, template, found)


def _leaks(text: str) -> list[str]:
    return [m for m in B_MARKERS if m in text]


@pytest.mark.anyio
async def test_a_principal_of_site_a_gets_nothing_of_site_b_from_any_route(api) -> None:
    c, store, token = api
    h = {"Authorization": f"Bearer {token}"}
    before = (store.telemetry.list_devices(), store.commands.list_commands("dev-b"), store.security.list_identities(),
              store.alerts.list_alerts("all"), store.fleet.list_groups())
    refused, answered, failures = 0, 0, []
    for (method, template) in sorted(ROUTES):
        path = template.format(**PARAMS)
        for query in ({}, QUERIES):
            body = BODIES.get((method, template))
            r = await c.request(method, path, params=query, headers=h,
                                content=json.dumps(body).encode() if body is not None else None)
            if r.status_code in (401, 403, 404):
                refused += 1
                continue
            answered += 1
            if r.status_code >= 500 or (leaked := _leaks(r.text)):
                failures.append(f"{method} {path} {query}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    assert refused >= 60 and answered >= 20  # both kinds of answer were really exercised
    after = (store.telemetry.list_devices(), store.commands.list_commands("dev-b"), store.security.list_identities(),
             store.alerts.list_alerts("all"), store.fleet.list_groups())
    assert after == before  # nothing of site B (nor anything fleet-wide) was changed


@pytest.mark.anyio
async def test_the_same_routes_answer_site_a_its_own_data(api) -> None:
    """The matrix is not passing for nothing: the scoped principal does see its own site through the lists."""
    c, _, token = api
    h = {"Authorization": f"Bearer {token}"}
    assert [d["device_id"] for d in (await c.get("/v1/devices", headers=h)).json()["devices"]] == ["dev-a"]
    assert [s["site_id"] for s in (await c.get("/v1/sites", headers=h)).json()["sites"]] == ["site-a"]
    assert [a["subject"] for a in (await c.get("/v1/alerts", headers=h)).json()["alerts"]] == ["dev-a"]
    assert [r["device_id"] for r in (await c.get("/v1/updates", headers=h)).json()["updates"]] == ["dev-a"]
    assert (await c.get("/v1/devices/dev-a/logs", headers=h)).json()["logs"][0]["values"] == {"msg": "secret-a"}
    assert [s["target"] for s in (await c.get("/v1/silences", headers=h)).json()["silences"]] == ["gw-a"]
    assert (await c.get("/v1/devices", params={"site": "site-b"}, headers=h)).status_code == 403
    assert (await c.get("/v1/devices/dev-b/commands", headers=h)).status_code == 403
    assert (await c.get("/v1/audit", headers=h)).status_code == 403  # fleet-wide: an unscoped principal only

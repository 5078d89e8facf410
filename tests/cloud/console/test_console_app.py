"""The console in process (no browser): its view table, sessions, login, CSRF, access and audit.

The browser tests (``test_console_browser.py``) drive the same pages in Chromium against real processes;
these check the rules themselves on the app, quickly, with ``httpx.ASGITransport``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.console import VIEWS, mount
from cloud.console.session import Sessions, csrf_ok
from cloud.console.views import SITE_SOURCES
from cloud.http import ApiContext, create_app
from cloud.security.rbac import PERMISSIONS
from cloud.security.service import SecurityService
from cloud.store import Store
from common.protocol.messages import ForwardRecord

BOOT = "bootstrap-token-for-console-tests"
NOW_MS = 1_700_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    s.telemetry.ingest("gw-1", "site-a", [ForwardRecord("d1", "bulk", 1, NOW_MS - 2000, "env", {"t": 1.0})], NOW_MS - 1000)
    s.telemetry.ingest("gw-2", "site-b", [ForwardRecord("d2", "bulk", 1, NOW_MS - 2000, "env", {"t": 2.0})], NOW_MS - 1000)
    yield s
    s.close()


@pytest.fixture
def app(store: Store) -> Iterator[object]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="store")
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate())
    yield create_app(ApiContext(store, BOOT, executor=executor, now_ms=lambda: NOW_MS, security=service), mounts=[mount])
    executor.shutdown()


def browser(app: object) -> httpx.AsyncClient:  # a client that keeps cookies, like a browser
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 50123)), base_url="http://console")


async def login(c: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    return await c.post("/login", data={"csrf": csrf, "token": token, "next": "/devices"})


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def flat(routes: list) -> list:  # noqa: ANN001 -- an included router holds its routes (FastAPI >= 0.160)
    out = []
    for r in routes:
        inner = getattr(getattr(r, "original_router", None), "routes", None)
        out += flat(inner) if inner is not None else [r]
    return out


def test_every_console_route_is_a_view_with_a_known_action_and_site_source(app: object) -> None:
    rows = {(v.method, v.path) for v in VIEWS}
    public = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/static/{name}")}
    routes = {(m, r.path) for r in flat(app.routes)  # type: ignore[attr-defined]
              if getattr(r, "endpoint", None) is not None and r.endpoint.__module__.startswith("cloud.console")
              for m in getattr(r, "methods", ()) if m != "HEAD"}
    assert routes - public == rows, "a console route without its row in VIEWS (or a row without a route)"
    assert len({v.path for v in VIEWS if v.method == "GET"}) >= 10  # the ten views and the wizard
    for v in VIEWS:
        assert v.action in PERMISSIONS, v
        assert v.site in SITE_SOURCES, v


def test_sessions_expire_and_csrf_is_per_session() -> None:
    sessions = Sessions(ttl_s=60)
    s = sessions.create("tok", {"name": "ann", "role": "viewer", "sites": ["site-a"], "token_id": "t1"}, NOW_MS)
    assert sessions.get(s.sid, NOW_MS + 59_999) is s
    assert s.principal.sites == frozenset({"site-a"}) and s.principal.role.label == "viewer"
    other = sessions.create("tok", {"name": "ann", "role": "viewer", "sites": None}, NOW_MS)
    assert csrf_ok(s, s.csrf) and not csrf_ok(s, other.csrf) and not csrf_ok(s, "") and not csrf_ok(s, None)
    assert sessions.get(s.sid, NOW_MS + 60_000) is None and sessions.get(s.sid, NOW_MS) is None  # gone once expired
    sessions.drop(other.sid)
    assert sessions.get(other.sid, NOW_MS) is None and len(sessions) == 0


@pytest.mark.anyio
async def test_login_sets_a_strict_httponly_session_cookie_and_is_audited(app: object, store: Store) -> None:
    async with browser(app) as c:
        r = await c.get("/devices")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fdevices"
        refused = await login(c, "wrong")
        assert refused.status_code == 401 and "not valid" in refused.text
        r = await login(c, BOOT)
        assert r.status_code == 303 and r.headers["location"] == "/devices"
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("ef_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie and "Path=/" in cookie
        page = await c.get("/devices")
        assert page.status_code == 200 and 'data-device="d1"' in page.text and 'data-device="d2"' in page.text
    logins = [r for r in store.security.audit_records() if r.action == "console.login"]
    assert [(r.who, r.result, r.source) for r in logins] == [("<unauthenticated>", "refused", "10.1.2.3:50123"),
                                                              ("bootstrap-admin", "allowed", "10.1.2.3:50123")]


@pytest.mark.anyio
async def test_a_login_form_without_its_own_token_is_refused(app: object) -> None:
    async with browser(app) as c:
        r = await c.post("/login", data={"csrf": "guess", "token": BOOT})
        assert r.status_code == 403 and "ef_session" not in r.headers.get("set-cookie", "")


@pytest.mark.anyio
async def test_every_post_needs_the_session_csrf_token_and_an_action_is_audited_like_its_api_twin(app: object, store: Store) -> None:
    async with browser(app) as c:
        await login(c, BOOT)
        r = await c.post("/devices/d1/ping", data={"csrf": "forged"})
        assert r.status_code == 403 and "CSRF" in r.text
        assert store.commands.list_commands("d1") == []
        token = csrf_of((await c.get("/devices/d1")).text)
        r = await c.post("/devices/d1/ping", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"].startswith("/devices/d1")
        r = await c.post("/devices/d1/ping", headers={"X-CSRF-Token": token, "HX-Request": "true"})  # as htmx sends it
        assert r.status_code == 204 and r.headers["hx-redirect"].startswith("/devices/d1")
    assert [c["name"] for c in store.commands.list_commands("d1")] == ["ping", "ping"]
    pings = [r for r in store.security.audit_records() if r.action == "devices.command"]
    assert [(r.who, r.target, r.result, r.source) for r in pings] == [
        ("bootstrap-admin", "/v1/devices/d1/commands", "allowed", "10.1.2.3:50123")] * 2  # the API's own record


@pytest.mark.anyio
async def test_a_scoped_viewer_sees_its_site_only_and_no_button(app: object, store: Store) -> None:
    async with browser(app) as admin:
        await login(admin, BOOT)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
        h = {"Authorization": f"Bearer {BOOT}"}
        assert (await api.post("/v1/users", json={"user_id": "vic", "role": "viewer", "sites": ["site-a"]}, headers=h)).status_code == 201
        token = (await api.post("/v1/tokens", json={"user_id": "vic"}, headers=h)).json()["token"]
    async with browser(app) as c:
        await login(c, token)
        devices = await c.get("/devices")
        assert 'data-device="d1"' in devices.text and 'data-device="d2"' not in devices.text
        for path in ("/", "/devices", "/devices/d1", "/alerts", "/enrollment", "/sites/site-a"):  # (no rollout service here)
            r = await c.get(path)
            assert r.status_code == 200, path
            assert "hx-post" not in r.text and 'method="post" action="/logout"' in r.text, path
            assert r.text.count('method="post"') == 1, path  # the logout form only
        assert (await c.get("/devices/d2")).status_code == 404
        assert (await c.get("/sites/site-b")).status_code == 403
        assert (await c.get("/audit")).status_code == 403
        token_csrf = csrf_of((await c.get("/devices/d1")).text)
        refused = await c.post("/devices/d1/ping", data={"csrf": token_csrf})
        assert refused.status_code == 403 and "devices.command needs operator" in refused.text
    assert store.commands.list_commands("d1") == []


@pytest.mark.anyio
async def test_a_bad_query_is_shown_under_the_filter_box(app: object) -> None:
    async with browser(app) as c:
        await login(c, BOOT)
        r = await c.get("/devices", params={"q": "site = "})
        assert r.status_code == 200 and 'id="query-problem"' in r.text and "^" in r.text


@pytest.mark.anyio
async def test_logout_ends_the_session(app: object) -> None:
    async with browser(app) as c:
        await login(c, BOOT)
        token = csrf_of((await c.get("/devices")).text)
        r = await c.post("/logout", data={"csrf": token})
        assert r.status_code == 303
        assert (await c.get("/devices")).status_code == 303  # to the login page again


@pytest.mark.anyio
async def test_static_assets_ship_in_the_package(app: object) -> None:
    async with browser(app) as c:
        js = await c.get("/static/htmx.min.js")
        assert js.status_code == 200 and "htmx" in js.text[:2000]
        assert (await c.get("/static/../app.py")).status_code == 404
        page = (await c.get("/login")).text
        assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from another host

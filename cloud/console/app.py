"""The console mounted beside the operator API on the same port: pages under ``/``, assets under ``/static``.

    app = create_app(ctx, mounts=[cloud.console.mount])

``mount`` adds the login and logout routes, the vendored static files (``cloud/console/static``: htmx and
its license; nothing from a CDN, so a site with no internet gets every page whole), the feature pages
(``cloud.console.fleet``, ``.operations``, ``.rollouts``) and the error page renderer given to the API's one
error handler (``cloud.http.errors``): a 401 sends the browser to the login page, any other error is a page
with the same status and message the API would answer.

Login: the form takes an API token (the bootstrap token or one from ``edgefleet tokens create``), asks
``GET /v1/me`` with it, and starts a session (``cloud.console.session``); the login, refused or not, is in
the audit log (``console.login``), as is the logout.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fastapi
import jinja2
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cloud.console import fleet, operations, rollouts
from cloud.console.api import ConsoleApi
from cloud.console.session import COOKIE, LOGIN_COOKIE, SESSION_S, Sessions, csrf_ok
from cloud.console.views import read_form
from cloud.http.context import ApiContext
from cloud.security.service import Actor
from common.errors import ApiError

__all__ = ["Console", "mount"]

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"htmx.min.js": "text/javascript", "console.css": "text/css", "console.js": "text/javascript"}
NAV = [("/", "Overview", "sites.list"), ("/devices", "Devices", "devices.list"), ("/enrollment", "Enrollment", "devices.list"),
       ("/releases", "Releases", "devices.list"), ("/rollouts", "Rollouts", "devices.list"),
       ("/alerts", "Alerts", "devices.list"), ("/audit", "Audit", "audit.read")]


class Console:
    """What every console page shares: sessions, templates, the clock, and the audit of logins."""

    def __init__(self, ctx: ApiContext, sessions: Sessions | None = None) -> None:
        self.ctx = ctx
        self.sessions = sessions or Sessions()
        self.now_ms: Callable[[], int] = ctx.now_ms
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("cloud.console", "templates"), autoescape=True,
            trim_blocks=True, lstrip_blocks=True)
        self.templates.filters |= {"when": when, "ago": lambda ms: ago(ms, self.now_ms()), "size": size,
                                   "urlq": lambda v: quote(str(v), safe="")}
        self.templates.globals["nav"] = NAV

    def render(self, request: fastapi.Request, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(request=request, path=request.url.path, **values)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    async def audit(self, who: str, action: str, target: str, ok: bool, detail: str, request: fastapi.Request) -> None:
        service = self.ctx.security
        if service is None:
            return
        source = f"{request.client.host}:{request.client.port}" if request.client else ""
        now = self.now_ms()
        await self.ctx.call(lambda: service.audit(Actor(who, source), action, target, ok, detail, now))


def mount(app: fastapi.FastAPI, ctx: ApiContext) -> None:
    """Serve the console from ``app`` (the operator API's), with its pages, assets and error pages."""
    console = Console(ctx)
    app.state.console = console
    app.state.render_error = _error_page(console)
    router = fastapi.APIRouter(include_in_schema=False)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "max-age=3600"})

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: fastapi.Request, next: str = "/") -> Response:
        token = secrets.token_urlsafe(24)
        response = console.render(request, "login.html", page=None, login_csrf=token, next=_local(next), problem="")
        response.set_cookie(LOGIN_COOKIE, token, max_age=600, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/login")
        return response

    @router.post("/login", response_class=HTMLResponse)
    async def login(request: fastapi.Request) -> Response:
        form = await read_form(request)
        nxt = _local(form.get("next", "/"))
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), form.get("csrf", "").encode()):
            return _login_again(console, request, nxt, "the login form expired: try again", 403)
        token = form.get("token", "").strip()
        client = (request.client.host, request.client.port) if request.client else ("127.0.0.1", 0)
        try:
            me = await ConsoleApi(request.app, token, client).get("/v1/me") if token else None
        except ApiError as exc:
            me, why = None, str(exc)
        else:
            why = "no token given"
        if me is None:
            await console.audit("<unauthenticated>", "console.login", "console", False, why[:200], request)
            return _login_again(console, request, nxt, "that token is not valid (wrong, revoked or expired)", 401)
        session = console.sessions.create(token, me, console.now_ms())
        await console.audit(me["name"], "console.login", "console", True,
                            f"session for {me['name']} ({me['role']}, sites {me['sites'] or 'all'})", request)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(COOKIE, session.sid, max_age=SESSION_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    @router.post("/logout")
    async def logout(request: fastapi.Request) -> Response:
        session = console.sessions.get(request.cookies.get(COOKIE), console.now_ms())
        form = await read_form(request)
        if session is not None and csrf_ok(session, form.get("csrf")):
            console.sessions.drop(session.sid)
            await console.audit(session.me["name"], "console.logout", "console", True, "session ended", request)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    app.include_router(router)
    for module in (fleet, operations, rollouts):
        app.include_router(module.routes())


def _login_again(console: Console, request: fastapi.Request, nxt: str, problem: str, status: int) -> Response:
    token = secrets.token_urlsafe(24)
    response = console.render(request, "login.html", status=status, page=None, login_csrf=token, next=nxt, problem=problem)
    response.set_cookie(LOGIN_COOKIE, token, max_age=600, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/login")
    return response


def _error_page(console: Console):  # noqa: ANN202 -- cloud.http.errors.HtmlRenderer
    async def render(request: fastapi.Request, status: int, code: str, detail: str) -> Response:
        if status == 401:
            to = f"/login?next={quote(_local(str(request.url.path)), safe='')}"
            if request.headers.get("hx-request"):
                return Response(status_code=204, headers={"HX-Redirect": to})
            return RedirectResponse(to, status_code=303)
        page = getattr(request.state, "page", None)
        return console.render(request, "error.html", status=status, page=page, code=code, detail=detail)

    return render


def _local(target: str) -> str:
    """Only a path on this console is a place to go after login (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "never"
    s = max(0, (now_ms - ms) // 1000)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit} ago"
    return f"{s}s ago"


def size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)



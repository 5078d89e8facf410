"""The console's views: each declares its action and where its site comes from, the way an API route does.

    @view(router, "GET", "/devices/{device_id}", action="devices.show", site="device")
    async def device(request, device_id): page = request.state.page; ...

``VIEWS`` is the table of every console route (a test checks each route is in it and each action is one
``cloud.security.rbac.PERMISSIONS`` knows). Before a handler runs, its wrapper finds the session (no
session: to the login page), finds the view's site and asks ``authorize(principal, action, site)`` (a
refusal is ``Forbidden``, 403, rendered as a page), then checks the CSRF token of every POST. Then the
handler reads and writes through the API (``Page.get``/``Page.post``), which checks the same again.

Where the site comes from (``site=``):

    None        fleet-wide: an unscoped principal only
    "scope"     the site chosen on the page (``?site=``), by default the first of the principal's sites;
                an unscoped principal sees every site
    "device"    the site of the device named by the path (found through the API, within the principal's sites)
    "identity"  the site of the enrolling device named by the path (its identity record)
    "path"      the ``site`` path parameter

The order is the API's: session, then role and site, then the body (at most ``MAX_FORM`` bytes) and its CSRF
token. ``Page.can(action, site)`` is the same decision for a button: a page shows a button only when its action
would be allowed, so a scoped viewer sees no button that changes anything.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

import fastapi
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud.console.api import ConsoleApi
from cloud.console.session import COOKIE, Session, csrf_ok
from cloud.security.rbac import Principal, authorize
from common.errors import ConfigError, Forbidden, NotFound, Unauthenticated

__all__ = ["MAX_FORM", "SITE_SOURCES", "VIEWS", "Page", "View", "quoted", "read_form", "view"]

MAX_FORM = 64 << 10
SITE_SOURCES = (None, "scope", "device", "identity", "path")


@dataclass(frozen=True, slots=True)
class View:
    method: str
    path: str
    action: str
    site: str | None
    name: str


VIEWS: list[View] = []


@dataclass
class Page:
    """One request's view: who, through which session, with the API at hand and the view's site."""

    request: fastapi.Request
    session: Session
    api: ConsoleApi
    view: View
    console: Any  # cloud.console.app.Console: templates, sessions, clock
    site: str | None = None
    found: dict[str, Any] = field(default_factory=dict)  # the device or identity the site came from
    form: dict[str, str] = field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        return self.session.principal

    @property
    def scoped(self) -> bool:
        return self.principal.sites is not None

    def sites(self) -> list[str] | None:
        """The principal's sites, sorted; None for an unscoped principal."""
        return sorted(self.principal.sites) if self.principal.sites is not None else None

    def can(self, action: str, site: str | None = None) -> bool:
        return bool(authorize(self.principal, action, site))

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        """GET from the API; a scoped principal's reads name the page's site (the API checks it)."""
        if self.scoped and "site" not in params:
            params["site"] = self.site
        return await self.api.get(path, **params)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.api.post(path, body)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return self.console.render(self.request, template, status=status, page=self, **values)

    def redirect(self, to: str) -> Response:
        """After an action: back to a page (htmx follows ``HX-Redirect``, a plain form the 303)."""
        if self.request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": to})
        return RedirectResponse(to, status_code=303)


Handler = Callable[..., Awaitable[Response]]


def view(router: fastapi.APIRouter, method: str, path: str, *, action: str, site: str | None = None) -> Callable[[Handler], Handler]:
    """Register a console route and its row of ``VIEWS``; the handler runs only for an authorized session."""
    if site not in SITE_SOURCES:
        raise ValueError(f"view {path}: site source {site!r} is not one of {SITE_SOURCES}")

    def decorate(fn: Handler) -> Handler:
        row = View(method, path, action, site, fn.__name__)
        VIEWS.append(row)

        @functools.wraps(fn)
        async def wrapper(request: fastapi.Request, **kw: Any) -> Response:
            page = await _enter(request, row, kw)
            request.state.page = page
            return await fn(request, **kw)

        wrapper.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
        router.add_api_route(path, wrapper, methods=[method], response_class=HTMLResponse, include_in_schema=False)
        return wrapper

    return decorate


async def _enter(request: fastapi.Request, row: View, params: dict[str, Any]) -> Page:
    console = request.app.state.console
    session = console.sessions.get(request.cookies.get(COOKIE), console.now_ms())
    if session is None:
        raise Unauthenticated("not logged in (or the session ended): log in with an API token")
    client = (request.client.host, request.client.port) if request.client else ("127.0.0.1", 0)
    page = Page(request, session, ConsoleApi(request.app, session.token, client), row, console)
    page.site = await _site(page, row, params)
    decision = authorize(page.principal, row.action, page.site)  # role and site before any body is read
    if not decision:
        raise Forbidden(f"{decision.reason}; ask an admin for a token with that role or site")
    if row.method == "POST":
        page.form = await read_form(request)
        if not csrf_ok(session, page.form.get("csrf") or request.headers.get("x-csrf-token")):
            raise Forbidden("the form's CSRF token does not match this session: reload the page and try again")
    return page


async def _site(page: Page, row: View, params: dict[str, Any]) -> str | None:
    sites = page.sites()
    if row.site is None:
        return None
    if row.site == "path":
        return str(params["site"])
    if row.site == "scope":
        if sites is None:
            return page.request.query_params.get("site") or None
        if not sites:
            raise Forbidden(f"{page.principal.name}: a token scoped to no site sees nothing")
        wanted = page.request.query_params.get("site")
        return wanted if wanted in sites else sites[0]
    key = str(params["device_id"])
    for candidate in sites if sites is not None else [None]:
        if row.site == "device":
            rows = (await page.api.get("/v1/fleet/devices", where=f"id = {json.dumps(key)}", site=candidate))["devices"]
        else:
            rows = [r for r in (await page.api.get("/v1/identities", site=candidate))["identities"] if r["device_id"] == key]
        if rows:
            page.found = rows[0]
            return str(rows[0]["site_id" if row.site == "device" else "site"])
    raise NotFound(f"No device by the id of {key!r} was found" + (" in your sites" if sites is not None else ""))


async def read_form(request: fastapi.Request) -> dict[str, str]:
    """An urlencoded form body (the console's forms), at most ``MAX_FORM`` bytes; the last value of each name."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise ConfigError(f"a console form is at most {MAX_FORM} bytes")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"the form does not decode: {exc}") from exc
    return {k: v[-1] for k, v in fields.items()}


def quoted(value: str) -> str:
    return quote(value, safe="")

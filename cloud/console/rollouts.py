"""Console pages of rollouts: the list, the wizard with its dry run, the live progress with its controls.

    GET  /rollouts                        every rollout, newest first
    GET  /rollouts/new                    the wizard: release, targets (a query or a group), canary size, waves,
                                          gates (soak, failure threshold), maintenance window
    POST /rollouts/dry-run                who each stage takes and when each site starts (POST /v1/rollouts/dry-run)
    POST /rollouts                        start it (``rollout.start``), then its progress page
    GET  /rollouts/{id}                   per stage and per site, live (htmx polls the progress part)
    POST /rollouts/{id}/pause             ``rollout.pause``
    POST /rollouts/{id}/resume|abort      ``rollout.abort`` (abort with "revert": updated devices go back)
"""

from __future__ import annotations

from typing import Any

import fastapi
from fastapi.responses import Response

from cloud.console.views import Page, quoted, view
from common.errors import ApiError, ConfigError

__all__ = ["plan_from_form", "routes"]

FINAL = ("completed", "aborted")


def _page(request: fastapi.Request) -> Page:
    return request.state.page


def plan_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The body of POST /v1/rollouts from the wizard's fields (a ``ConfigError`` names a field that is wrong)."""

    def number(name: str, default: str, kind: type = int) -> Any:
        raw = (form.get(name) or default).strip()
        try:
            return kind(raw)
        except ValueError as exc:
            raise ConfigError(f"{name.replace('_', ' ')} {raw!r} is not a number") from exc

    version = form.get("release", "").strip()
    if not version:
        raise ConfigError("choose the release to roll out")
    plan: dict[str, Any] = {
        "release": {"version": version},
        "canary": number("canary", "1"),
        "waves": [w.strip() for w in form.get("waves", "50%,100%").split(",") if w.strip()] or ["100%"],
        "soak_s": number("soak_s", "60", float),
        "failure": (form.get("failure") or "1").strip(),
        "max_installing_per_site": number("max_per_site", "10"),
    }
    cron = form.get("window_cron", "").strip()
    if cron:
        plan["windows"] = {"*": [[cron, number("window_s", "3600", float)]]}
        if form.get("timezone", "").strip():
            plan["timezones"] = {"*": form["timezone"].strip()}
    body: dict[str, Any] = {"plan": plan, "install_args": {}}
    if form.get("target") == "group" and form.get("group"):
        body["groups"] = [form["group"]]
    elif form.get("where", "").strip():
        body["where"] = form["where"].strip()
    if form.get("id", "").strip():
        body["id"] = form["id"].strip()
    return body


def _scoped(p: Page, r: dict[str, Any]) -> dict[str, Any]:
    """A scoped principal's view of a rollout: only the devices and sites of its scope."""
    allowed = p.sites()
    if allowed is None:
        return r
    r = dict(r)
    r["devices"] = [d for d in r["devices"] if d["site"] in allowed]
    r["progress"] = {stage: {s: v for s, v in sites.items() if s in allowed} for stage, sites in r["progress"].items()}
    totals: dict[str, int] = {}
    for d in r["devices"]:
        totals[d["state"]] = totals.get(d["state"], 0) + 1
    r["totals"] = totals
    return r


def routes() -> fastapi.APIRouter:
    router = fastapi.APIRouter(include_in_schema=False)

    @view(router, "GET", "/rollouts", action="devices.list", site="scope")
    async def rollouts(request: fastapi.Request) -> Response:
        p = _page(request)
        rows = (await p.get("/v1/rollouts"))["rollouts"][::-1]
        return p.render("rollouts.html", rollouts=rows)

    @view(router, "GET", "/rollouts/new", action="rollout.start")
    async def wizard(request: fastapi.Request) -> Response:
        p = _page(request)
        releases = [r for r in (await p.get("/v1/releases"))["releases"] if r["state"] == "published"]
        groups = (await p.get("/v1/groups"))["groups"]
        return p.render("wizard.html", releases=releases, groups=groups, problem="", form={})

    @view(router, "POST", "/rollouts/dry-run", action="rollout.start")
    async def dry_run(request: fastapi.Request) -> Response:
        p = _page(request)
        try:
            preview, problem = await p.post("/v1/rollouts/dry-run", plan_from_form(p.form)), ""
        except (ApiError, ConfigError) as exc:
            preview, problem = None, str(exc)
        return p.render("dry_run.html", preview=preview, problem=problem)

    @view(router, "POST", "/rollouts", action="rollout.start")
    async def create(request: fastapi.Request) -> Response:
        p = _page(request)
        try:
            made = await p.post("/v1/rollouts", plan_from_form(p.form))
        except (ApiError, ConfigError) as exc:
            if isinstance(exc, ApiError) and exc.status not in (400, 404, 409, 422):
                raise
            releases = [r for r in (await p.get("/v1/releases"))["releases"] if r["state"] == "published"]
            groups = (await p.get("/v1/groups"))["groups"]
            return p.render("wizard.html", status=400, releases=releases, groups=groups, problem=str(exc), form=p.form)
        return p.redirect(f"/rollouts/{quoted(made['id'])}")

    @view(router, "GET", "/rollouts/{rollout_id}", action="devices.list", site="scope")
    async def progress(request: fastapi.Request, rollout_id: str) -> Response:
        p = _page(request)
        r = _scoped(p, await p.get(f"/v1/rollouts/{quoted(rollout_id)}"))
        template = "rollout_live.html" if request.headers.get("hx-request") else "rollout.html"
        return p.render(template, r=r, final=r["state"] in FINAL)

    async def control(request: fastapi.Request, rollout_id: str, action: str) -> Response:
        p = _page(request)
        body = {"revert": p.form.get("revert") in ("1", "on", "true")} if action == "abort" else {}
        await p.post(f"/v1/rollouts/{quoted(rollout_id)}/{action}", body)
        return p.redirect(f"/rollouts/{quoted(rollout_id)}")

    @view(router, "POST", "/rollouts/{rollout_id}/pause", action="rollout.pause")
    async def pause(request: fastapi.Request, rollout_id: str) -> Response:
        return await control(request, rollout_id, "pause")

    @view(router, "POST", "/rollouts/{rollout_id}/resume", action="rollout.abort")
    async def resume(request: fastapi.Request, rollout_id: str) -> Response:
        return await control(request, rollout_id, "resume")

    @view(router, "POST", "/rollouts/{rollout_id}/abort", action="rollout.abort")
    async def abort(request: fastapi.Request, rollout_id: str) -> Response:
        return await control(request, rollout_id, "abort")

    return router

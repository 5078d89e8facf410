"""The operator API's rollout routes, mounted with ``ApiContext.rollouts`` under ``/v1`` behind the token:

    POST /v1/rollouts                  {"plan": {...RolloutPlan fields, "release": {"version"}}, "install_args",
                                        "id"?, "start_at_ms"?, "draft"?, "where"?, "groups"?}
                                       -> 201 the rollout with its progress
    POST /v1/rollouts/dry-run          the same body -> who each stage takes, who is left out, when each site starts
    GET  /v1/rollouts                  {"rollouts": [...], "next_cursor"} oldest first
    GET  /v1/rollouts/{id}             the rollout: state, reason, stage, per-stage per-site progress, devices
    POST /v1/rollouts/{id}/pause|resume|abort   ({"revert": true} with abort: send updated devices back)

Targets: the plan's selector (sites, tags, hardware, versions), narrowed to the devices matching ``where``
(the query language of ``cloud.fleet.query``) and to the members of ``groups`` (static or dynamic), both
evaluated now against the fleet view.

Errors are ``{"error": code, "detail": message}`` (``cloud.http.errors``): ``invalid`` (400),
``not_found`` (404), ``state``/``transition`` (409: the rollout's state does not allow it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import fastapi
import pydantic

from cloud.fleet import query
from cloud.fleet.views import device_views, query_view
from cloud.http.context import ApiContext
from cloud.http.models.operations import DryRun, RolloutsPage, RolloutView
from cloud.http.paging import DEFAULT_LIMIT, Cursor, Limit, paginate
from cloud.http.scope import site_scope
from common.errors import RolloutError, RolloutNotFound

__all__ = ["ControlRequest", "PlanRequest", "RolloutRequest", "routes"]

_Str = Annotated[str, pydantic.StringConstraints(max_length=4096)]
_Count = Annotated[int, pydantic.Field(ge=0, le=10_000_000)]
_Seconds = Annotated[float, pydantic.Field(ge=0, le=10 * 366 * 86400)]


class ReleaseRef(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    version: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]


class PlanRequest(pydantic.BaseModel):
    """A rollout plan (``common.rollouts.RolloutPlan`` fields); only ``release.version`` is required."""

    model_config = pydantic.ConfigDict(extra="allow", allow_inf_nan=False)
    release: ReleaseRef
    selector: dict[Literal["sites", "groups", "tags", "hardware", "versions", "devices"], list[_Str]] | None = None
    canary: _Count | None = None
    canary_group: _Str | None = None
    waves: list[_Str] | None = None
    soak_s: _Seconds | None = None
    success: _Str | None = None
    failure: _Str | None = None
    local_failure: _Str | None = None
    min_sample: _Count | None = None
    on_failure: Literal["pause", "abort"] | None = None
    max_installing_per_site: _Count | None = None
    max_starts_per_minute: _Count | None = None
    windows: dict[_Str, list[tuple[_Str, _Seconds]]] | None = None
    timezones: dict[_Str, _Str] | None = None
    download_ahead: bool | None = None
    timeout_s: _Seconds | None = None
    max_retries: _Count | None = None
    backoff_s: _Seconds | None = None
    heartbeat_s: _Seconds | None = None
    metric_rules: list[_Str] | None = None
    health_margin: Annotated[float, pydantic.Field(ge=0, le=1)] | None = None
    allow_downgrade: bool | None = None
    allow_below_floor: bool | None = None
    site_autonomy: bool | None = None


class RolloutRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    plan: PlanRequest
    install_args: dict[_Str, _Str] = {}
    id: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    start_at_ms: Annotated[int, pydantic.Field(ge=0, le=10**15)] | None = None
    draft: bool = False
    where: Annotated[str, pydantic.StringConstraints(max_length=4000)] | None = None
    groups: list[Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)]] | None = None


class ControlRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    revert: bool = False


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    service = ctx.rollouts
    assert service is not None
    router = fastapi.APIRouter()

    async def targets(body: RolloutRequest) -> set[str] | None:
        """The devices ``where`` and ``groups`` select now (None: neither given)."""
        if body.where is None and body.groups is None:
            return None
        node = query.parse(body.where) if body.where else None  # QueryError: 400 with the position
        views = await ctx.call(lambda: device_views(ctx.store.fleet.fleet_snapshot()))
        wanted = set(body.groups or ())
        return {v["device_id"] for v in views
                if (node is None or query.matches(node, query_view(v))) and (not wanted or wanted & set(v["groups"]))}

    def as_body(body: RolloutRequest) -> dict[str, Any]:
        out = body.model_dump(exclude={"where", "groups"}, exclude_none=True)
        out["plan"] = {k: v for k, v in out["plan"].items() if v is not None}
        return out

    @router.post("/rollouts", status_code=201, response_model=RolloutView)
    async def create_rollout(body: RolloutRequest) -> dict[str, Any]:
        return await service.create(as_body(body), await targets(body))

    @router.post("/rollouts/dry-run", response_model=DryRun)
    async def dry_run(body: RolloutRequest) -> dict[str, Any]:
        return await service.preview(as_body(body), await targets(body))

    @router.get("/rollouts", response_model=RolloutsPage)
    async def list_rollouts(request: fastapi.Request, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        """Every rollout, oldest first; a scoped caller's: those that take devices of its sites."""
        scope = await site_scope(request, ctx)
        rows = await service.list()
        if not scope.everything:
            rows = [r for r in rows if scope.rollout(await service.show(r["id"])) is not None]
        page, nxt = paginate(rows, key=None, limit=limit, cursor=cursor)  # oldest first
        return {"rollouts": page, "next_cursor": nxt}

    @router.get("/rollouts/{rollout_id}", response_model=RolloutView)
    async def show_rollout(request: fastapi.Request, rollout_id: str) -> dict[str, Any]:
        """The rollout; a scoped caller sees only its sites' devices and progress (404 if it takes none of them)."""
        view = (await site_scope(request, ctx)).rollout(await service.show(rollout_id))
        if view is None:
            raise RolloutNotFound(rollout_id, "it takes no device of the caller's sites")
        return view

    @router.post("/rollouts/{rollout_id}/{action}", response_model=RolloutView)
    async def control_rollout(rollout_id: str, action: Literal["pause", "resume", "abort"],
                              body: ControlRequest | None = None) -> dict[str, Any]:
        if action not in ("pause", "resume", "abort"):  # the route's type says so; kept for direct callers
            raise RolloutError(rollout_id, "invalid", f"unknown action {action!r}: pause, resume or abort")
        return await service.control(rollout_id, action, (body or ControlRequest()).revert)

    return router

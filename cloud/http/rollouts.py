"""The operator API's rollout routes, mounted with ``ApiContext.rollouts`` under ``/v1`` behind the token:

    POST /v1/rollouts                  {"plan": {...RolloutPlan fields, "release": {"version"}}, "install_args",
                                        "id"?, "start_at_ms"?, "draft"?} -> 201 the rollout with its progress
    GET  /v1/rollouts                  {"rollouts": [...]} oldest first
    GET  /v1/rollouts/{id}             the rollout: state, reason, stage, per-stage per-site progress, devices
    POST /v1/rollouts/{id}/pause|resume|abort   ({"revert": true} with abort: send updated devices back)

Errors are ``{"error": code, "detail": message}`` (``cloud.http.errors``): ``invalid`` (400),
``not_found`` (404), ``state``/``transition`` (409: the rollout's state does not allow it).
"""

from __future__ import annotations

from typing import Any

import fastapi

from cloud.http.context import ApiContext
from common.errors import RolloutError

__all__ = ["routes"]


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    service = ctx.rollouts
    assert service is not None
    router = fastapi.APIRouter()

    @router.post("/rollouts", status_code=201)
    async def create_rollout(body: dict[str, Any] = fastapi.Body(...)) -> dict[str, Any]:
        return await service.create(body)

    @router.get("/rollouts")
    async def list_rollouts() -> dict[str, Any]:
        return {"rollouts": await service.list()}

    @router.get("/rollouts/{rollout_id}")
    async def show_rollout(rollout_id: str) -> dict[str, Any]:
        return await service.show(rollout_id)

    @router.post("/rollouts/{rollout_id}/{action}")
    async def control_rollout(rollout_id: str, action: str, body: dict[str, Any] | None = fastapi.Body(None)) -> dict[str, Any]:
        if action not in ("pause", "resume", "abort"):
            raise RolloutError(rollout_id, "invalid", f"unknown action {action!r}: pause, resume or abort")
        return await service.control(rollout_id, action, bool((body or {}).get("revert")))

    return router

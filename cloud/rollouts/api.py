"""The operator API's rollout routes, mounted by ``cloud.api.create_app(..., rollouts=service)`` under
``/v1`` behind the bearer token:

    POST /v1/rollouts                  {"plan": {...RolloutPlan fields, "release": {"version"}}, "install_args",
                                        "id"?, "start_at_ms"?, "draft"?} -> 201 the rollout with its progress
    GET  /v1/rollouts                  {"rollouts": [...]} oldest first
    GET  /v1/rollouts/{id}             the rollout: state, reason, stage, per-stage per-site progress, devices
    POST /v1/rollouts/{id}/pause|resume|abort   ({"revert": true} with abort: send updated devices back)

Errors are ``{"error": code, "detail": message}``: ``invalid`` (400), ``not_found`` (404),
``state``/``transition`` (409: the rollout's state does not allow it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import fastapi
from fastapi.responses import JSONResponse

from cloud.rollouts.service import RolloutService
from common.errors import RolloutError, StoreError

__all__ = ["rollout_routes"]

_STATUS = {"not-found": 404, "state": 409, "transition": 409}


async def _answer(run: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await run()
    except RolloutError as exc:
        code = exc.reason.replace("-", "_")
        return JSONResponse({"error": code, "detail": str(exc)}, status_code=_STATUS.get(exc.reason, 400))
    except StoreError as exc:
        return JSONResponse({"error": "store_unavailable", "detail": str(exc)}, status_code=503)


def rollout_routes(service: RolloutService) -> fastapi.APIRouter:
    router = fastapi.APIRouter()

    @router.post("/rollouts", status_code=201, response_model=None)
    async def create_rollout(body: dict[str, Any] = fastapi.Body(...)) -> Any:
        return await _answer(lambda: service.create(body))

    @router.get("/rollouts", response_model=None)
    async def list_rollouts() -> Any:
        async def run() -> dict[str, Any]:
            return {"rollouts": await service.list()}

        return await _answer(run)

    @router.get("/rollouts/{rollout_id}", response_model=None)
    async def show_rollout(rollout_id: str) -> Any:
        return await _answer(lambda: service.show(rollout_id))

    @router.post("/rollouts/{rollout_id}/{action}", response_model=None)
    async def control_rollout(rollout_id: str, action: str, body: dict[str, Any] | None = fastapi.Body(None)) -> Any:
        if action not in ("pause", "resume", "abort"):
            return JSONResponse({"error": "invalid", "detail": f"unknown action {action!r}: pause, resume or abort"},
                                status_code=400)
        revert = bool((body or {}).get("revert"))
        return await _answer(lambda: service.control(rollout_id, action, revert))

    return router

"""The operator API's release routes, mounted by ``cloud.api.create_app(..., releases=service)``
under ``/v1`` behind the bearer token:

    POST /v1/releases?version=V&hw=M[&hw=M2][&min_version=Y][&security_version=N][&expires_s=S]
         body: the image, raw (application/octet-stream), streamed to disk as it arrives
         -> 201 the unsigned release: {"version", "state": "unsigned", "size", "sha256", "hw", ...,
            "deltas": [{"from_version", "status", "method", "size", "sha256", "detail"}],
            "manifest": {...}, "manifest_body": "<the exact text to sign>", "seconds"}
    POST /v1/releases/{version}/signature
         body: a signed manifest (``SignedManifest.to_bytes()``) -> 200 the published release;
         400 with the reason (bad_signature, unknown_key, body_differs, expired, malformed,
         no_trusted_keys), 404 unknown release, 409 already published with another signature
    GET  /v1/releases                     {"releases": [...]} by version order
    GET  /v1/releases/{version}           the release with its manifest and delta outcomes

Errors are ``{"error": code, "detail": message}`` like every route; codes are the
``ReleaseError`` reasons with underscores.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import fastapi
from fastapi.responses import JSONResponse

from cloud.releases.plan import ReleaseRequest
from cloud.releases.service import ReleaseService
from common.errors import ReleaseError, StoreError
from common.firmware.manifest import MAX_BODY

__all__ = ["release_routes"]

MAX_SIGNED = 2 * MAX_BODY + (64 << 10)  # what SignedManifest.from_bytes accepts, and some room
_STATUS = {"not-found": 404, "exists": 409, "busy": 409, "published": 409, "too-large": 413}


def release_routes(service: ReleaseService, now_ms: Callable[[], int]) -> fastapi.APIRouter:
    """The routes over ``service``; the caller adds the prefix and the bearer-token dependency."""
    router = fastapi.APIRouter()

    @router.post("/releases", status_code=201, response_model=None)
    async def create_release(
        request: fastapi.Request,
        version: str,
        hw: Annotated[list[str], fastapi.Query()],
        min_version: str | None = None,
        security_version: int = 0,
        expires_s: int | None = None,
    ) -> dict[str, Any] | JSONResponse:
        async def run() -> dict[str, Any]:
            req = ReleaseRequest.parse(
                version,
                hw,
                min_version=min_version,
                security_version=security_version,
                expires_s=expires_s,
                settings=service.settings,
            )
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > service.settings.max_image_bytes:
                raise ReleaseError(
                    version,
                    "too-large",
                    f"the image ({declared} bytes) is over the limit of {service.settings.max_image_bytes}",
                )
            return await service.create(req, request.stream(), now_ms())

        return await _answer(run)

    @router.post("/releases/{version}/signature", response_model=None)
    async def sign_release(version: str, request: fastapi.Request) -> dict[str, Any] | JSONResponse:
        async def run() -> dict[str, Any]:
            data = bytearray()
            async for piece in request.stream():
                data += piece
                if len(data) > MAX_SIGNED:
                    raise ReleaseError(version, "too-large", f"a signed manifest is at most {MAX_SIGNED} bytes")
            return await service.publish(version, bytes(data), now_ms())

        return await _answer(run)

    @router.get("/releases", response_model=None)
    async def list_releases() -> dict[str, Any] | JSONResponse:
        async def run() -> dict[str, Any]:
            return {"releases": await service.list()}

        return await _answer(run)

    @router.get("/releases/{version}", response_model=None)
    async def show_release(version: str) -> dict[str, Any] | JSONResponse:
        return await _answer(lambda: service.show(version))

    return router


async def _answer(run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any] | JSONResponse:
    try:
        return await run()
    except ReleaseError as exc:
        code = "not_found" if exc.reason == "not-found" else exc.reason.replace("-", "_")
        return JSONResponse({"error": code, "detail": str(exc)}, status_code=_STATUS.get(exc.reason, 400))
    except StoreError as exc:
        return JSONResponse({"error": "store_unavailable", "detail": str(exc)}, status_code=503)

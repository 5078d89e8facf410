"""The operator API's release routes, mounted with ``ApiContext.releases`` under ``/v1`` behind the token:

    POST /v1/releases?version=V&hw=M[&hw=M2][&min_version=Y][&security_version=N][&expires_s=S][&module=swupdate]
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

Errors are ``{"error": code, "detail": message}`` like every route (``cloud.http.errors``); codes
are the ``ReleaseError`` reasons with underscores.
"""

from __future__ import annotations

from typing import Annotated, Any

import fastapi

from cloud.http.context import ApiContext
from cloud.http.models.operations import ReleaseRow, ReleasesPage
from cloud.http.paging import DEFAULT_LIMIT, Cursor, Limit, paginate
from cloud.releases.plan import ReleaseRequest
from common.errors import ReleaseTooLarge
from common.firmware.manifest import DEFAULT_MODULE, MAX_BODY

__all__ = ["MAX_SIGNED", "routes"]

MAX_SIGNED = 2 * MAX_BODY + (64 << 10)  # what SignedManifest.from_bytes accepts, and some room
# the raw bodies these routes stream, as the OpenAPI document shows them
IMAGE_BODY = {"requestBody": {"required": True, "description": "The firmware image, raw",
                              "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
SIGNED_BODY = {"requestBody": {"required": True, "description": "The signed manifest (SignedManifest.to_bytes())",
                               "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def routes(ctx: ApiContext) -> fastapi.APIRouter:
    """The routes over ``ctx.releases``; the app adds the prefix and the token check."""
    service = ctx.releases
    assert service is not None
    router = fastapi.APIRouter()

    @router.post("/releases", status_code=201, response_model=ReleaseRow, openapi_extra=IMAGE_BODY)
    async def create_release(
        request: fastapi.Request,
        version: str,
        hw: Annotated[list[str], fastapi.Query()],
        min_version: str | None = None,
        security_version: int = 0,
        expires_s: int | None = None,
        module: str = DEFAULT_MODULE,
    ) -> dict[str, Any]:
        req = ReleaseRequest.parse(
            version, hw, min_version=min_version, security_version=security_version, expires_s=expires_s,
            settings=service.settings, module=module,
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > service.settings.max_image_bytes:
            raise ReleaseTooLarge(
                version, f"the image ({declared} bytes) is over the limit of {service.settings.max_image_bytes}"
            )
        return await service.create(req, request.stream(), ctx.now_ms())

    @router.post("/releases/{version}/signature", response_model=ReleaseRow, openapi_extra=SIGNED_BODY)
    async def sign_release(version: str, request: fastapi.Request) -> dict[str, Any]:
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > MAX_SIGNED:
                raise ReleaseTooLarge(version, f"a signed manifest is at most {MAX_SIGNED} bytes")
        return await service.publish(version, bytes(data), ctx.now_ms())

    @router.get("/releases", response_model=ReleasesPage)
    async def list_releases(limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> dict[str, Any]:
        page, nxt = paginate(await service.list(), key=None, limit=limit, cursor=cursor)  # version order
        return {"releases": page, "next_cursor": nxt}

    @router.get("/releases/{version}", response_model=ReleaseRow)
    async def show_release(version: str) -> dict[str, Any]:
        return await service.show(version)

    return router

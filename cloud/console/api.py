"""The console's way to the operator API: the same app, called in process with the session's token.

Every page reads and every action writes through the API's routes, so each one passes the API's access
check (role and site, ``cloud.http.access``), its validation, its hooks, and its audit log entry with the
browser's address as source: a console action is its API twin. An error answer comes back as ``ApiError``
with the API's status and code (``cloud.http.errors`` renders it with that status).
"""

from __future__ import annotations

from typing import Any

import httpx

from common.errors import ApiError

__all__ = ["ConsoleApi"]


class ConsoleApi:
    def __init__(self, app: Any, token: str, client: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self._transport = httpx.ASGITransport(app=app, client=client)
        self._headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        return await self._call("GET", path, params={k: v for k, v in params.items() if v is not None})

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._call("POST", path, json=body if body is not None else {})

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=self._transport, base_url="http://console") as client:
            r = await client.request(method, path, headers=self._headers, **kw)
        try:
            body = r.json()
        except ValueError:
            body = {"error": "error", "detail": r.text[:500]}
        if r.status_code >= 400:
            error = ApiError(str(body.get("detail", "")), status=r.status_code)
            error.code = str(body.get("error", "error"))  # type: ignore[attr-defined]
            raise error
        return body

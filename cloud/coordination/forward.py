"""Any coordinator serves the operator API: a change to leader-only state made on one that does not lead
is forwarded to the leader.

Reads are served from the shared database by whichever coordinator is asked. Creating a rollout and
controlling one (``POST /v1/rollouts``, ``POST /v1/rollouts/{id}/{action}``) change the engines only the
leader runs: on a follower the request is sent on to the leader's API (its address is in the lease row),
with the caller's credentials, and the leader's answer is returned as it came (the leader checks access
and audits it). With no leader right now the answer is 503 ``no_leader``: try again within the takeover
bound. A dry run (``/v1/rollouts/dry-run``) only reads, so any coordinator answers it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["LEADER_ONLY", "install"]

LEADER_ONLY = re.compile(r"^/v1/rollouts(/[^/]+/[^/]+)?$")
_PASSED = ("authorization", "content-type", "cookie", "x-csrf-token", "accept")


def install(app: object, is_leader: Callable[[], bool], leader_api: Callable[[], str], client: httpx.AsyncClient,
            timeout_s: float = 120.0) -> None:
    """Add the forwarding middleware to the FastAPI ``app``."""

    async def forward(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method != "POST" or not LEADER_ONLY.match(request.url.path) or is_leader():
            return await call_next(request)
        target = leader_api()
        if not target:
            return JSONResponse({"error": "no_leader", "detail": "no coordinator leads right now (a takeover is under "
                                 "way): try again in a few seconds"}, status_code=503)
        url = target + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED}
        try:
            r = await client.post(url, content=await request.body(), headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": "no_leader", "detail": f"the leader at {target} did not answer: {exc}"},
                                status_code=503)
        return Response(r.content, status_code=r.status_code, media_type=r.headers.get("content-type"))

    app.middleware("http")(forward)  # type: ignore[attr-defined]

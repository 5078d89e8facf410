"""The operator API's one error handler: the HTTP status comes from the error's class, never its message.

Every error body is ``{"error": code, "detail": message}``. ``STATUS`` is read top to bottom and
the first class the error is an instance of decides (so the more specific come first):

    RequestValidationError   422 invalid_request     a body or parameter that does not validate
    Unauthenticated          401 unauthorized        (with ``WWW-Authenticate: Bearer``)
    Forbidden                403 forbidden
    BodyTooLarge             413 too_large           a body over its route's limit (``cloud.http.access``)
    RateLimited              429 rate_limited        too many failed logins from one source
    NotFound                 404 not_found           any id that names nothing (device, group, release...)
    TransitionError          409 transition_refused  the lifecycle table forbids it
    Conflict                 409 conflict            the object's state does not allow it
    ReleaseTooLarge          413 too_large
    FleetError               409 conflict
    ReleaseError, RolloutError  400 invalid          (other reasons: a bad parameter, a bad signature)
    QueryError               400 invalid_query       (the detail shows the query with a caret)
    ConfigError              400 invalid_request
    StoreError               503 store_unavailable   the database failed; try again
    EdgeFleetError           500 error               anything else EdgeFleet raised on purpose

An error with a ``reason`` code (``ReleaseError``, ``RolloutError``) gives that code, with
underscores (``not-found`` -> ``not_found``, ``bad-signature`` -> ``bad_signature``).

Starlette's own ``HTTPException`` (an unknown path, a method a route does not take) keeps its status,
with the code of that status (``not_found``, ``method_not_allowed``), and anything else that escapes a
route is a 500 ``error`` in the same body: every answer of the API is JSON of one shape.

``install(app, html=...)`` registers ``handle`` for those roots, ``EdgeFleetError`` and FastAPI's
``RequestValidationError``; the access middleware (``cloud.http.access``), which runs outside
the handlers, renders its refusals with ``error_response``. The status and code are decided here, once;
An ``ApiError`` with a status (an API answer the console relayed) keeps that status and code. ``html``
(the console's page renderer) only chooses how a request outside the JSON API (``/v1``,
``/metrics``) sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import fastapi
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from common.errors import (
    ApiError,
    BodyTooLarge,
    ConfigError,
    Conflict,
    EdgeFleetError,
    FleetError,
    Forbidden,
    NotFound,
    QueryError,
    RateLimited,
    ReleaseError,
    ReleaseTooLarge,
    RolloutError,
    StoreError,
    TransitionError,
    Unauthenticated,
)

__all__ = ["STATUS", "HtmlRenderer", "error_response", "handle", "install", "invalid", "resolve"]

HtmlRenderer = Callable[[fastapi.Request, int, str, str], Awaitable[Response]]
HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large", 429: "rate_limited", 415: "unsupported_media_type"}

log = logging.getLogger("edgefleet.api")

STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (RequestValidationError, 422, "invalid_request"),
    (Unauthenticated, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (BodyTooLarge, 413, "too_large"),
    (RateLimited, 429, "rate_limited"),
    (NotFound, 404, "not_found"),
    (TransitionError, 409, "transition_refused"),
    (Conflict, 409, "conflict"),
    (ReleaseTooLarge, 413, "too_large"),
    (FleetError, 409, "conflict"),
    (ReleaseError, 400, "invalid"),
    (RolloutError, 400, "invalid"),
    (QueryError, 400, "invalid_query"),
    (ConfigError, 400, "invalid_request"),
    (StoreError, 503, "store_unavailable"),
    (EdgeFleetError, 500, "error"),
)


def invalid(field: str, message: str) -> RequestValidationError:
    """A 422 for one field a route checked itself (e.g. a time that must lie in the future)."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def resolve(exc: Exception) -> tuple[int, str, str]:
    """(status, code, detail) of ``exc``: status and code from ``STATUS`` by its class, detail from the message."""
    if isinstance(exc, HTTPException):
        return exc.status_code, HTTP_CODES.get(exc.status_code, "error"), str(exc.detail)
    if isinstance(exc, ApiError) and exc.status is not None:  # an API answer relayed (the console): as it was
        return exc.status, str(getattr(exc, "code", "") or HTTP_CODES.get(exc.status, "error")), str(exc)
    status, code = next(((s, c) for cls, s, c in STATUS if isinstance(exc, cls)), (500, "error"))
    reason = getattr(exc, "reason", None)
    if isinstance(exc, (ReleaseError, RolloutError)) and isinstance(reason, str) and reason:
        code = reason.replace("-", "_")
    if isinstance(exc, RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    elif isinstance(exc, EdgeFleetError):
        detail = str(exc)
    else:  # not an error EdgeFleet raised on purpose: its text is not for the caller
        detail = f"internal error ({type(exc).__name__}); the cloud's log has the details"
    if status == 500:
        log.error("operator API request failed", extra={"error": str(exc), "type": type(exc).__name__})
    return status, code, detail


def error_response(exc: Exception) -> JSONResponse:
    """The JSON response for ``exc``: ``{"error": code, "detail": message}`` with the status of its class."""
    status, code, detail = resolve(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def handle(request: fastapi.Request, exc: Exception) -> Response:
    html: HtmlRenderer | None = getattr(request.app.state, "render_error", None)
    path = request.url.path
    if html is not None and not (path == "/v1" or path.startswith("/v1/") or path == "/metrics"):
        status, code, detail = resolve(exc)
        return await html(request, status, code, detail)
    return error_response(exc)


def install(app: fastapi.FastAPI, html: HtmlRenderer | None = None) -> None:
    """The one handler, for the one tree of EdgeFleet errors, request validation, Starlette's HTTP errors and
    anything else; ``html`` renders errors of requests outside the JSON API (the console's pages)."""
    app.state.render_error = html
    for root in (EdgeFleetError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(root, handle)

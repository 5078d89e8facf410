"""The operator API's one error handler: the HTTP status comes from the error's class, never its message.

Every error body is ``{"error": code, "detail": message}``. ``STATUS`` is read top to bottom and
the first class the error is an instance of decides (so the more specific come first):

    RequestValidationError   422 invalid_request     a body or parameter that does not validate
    Unauthenticated          401 unauthorized        (with ``WWW-Authenticate: Bearer``)
    Forbidden                403 forbidden
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

``install(app)`` registers ``handle`` for the two roots, ``EdgeFleetError`` and FastAPI's
``RequestValidationError``; the access middleware (``cloud.http.access``), which runs outside
the handlers, renders its refusals with ``error_response``.
"""

from __future__ import annotations

import logging

import fastapi
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.errors import (
    ConfigError,
    Conflict,
    EdgeFleetError,
    FleetError,
    Forbidden,
    NotFound,
    QueryError,
    ReleaseError,
    ReleaseTooLarge,
    RolloutError,
    StoreError,
    TransitionError,
    Unauthenticated,
)

__all__ = ["STATUS", "error_response", "handle", "install", "invalid"]

log = logging.getLogger("edgefleet.api")

STATUS: tuple[tuple[type[Exception], int, str], ...] = (
    (RequestValidationError, 422, "invalid_request"),
    (Unauthenticated, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
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


def error_response(exc: Exception) -> JSONResponse:
    """The response for ``exc``: status and code from ``STATUS``, detail from the message."""
    status, code = next(((s, c) for cls, s, c in STATUS if isinstance(exc, cls)), (500, "error"))
    reason = getattr(exc, "reason", None)
    if isinstance(exc, (ReleaseError, RolloutError)) and isinstance(reason, str) and reason:
        code = reason.replace("-", "_")
    if isinstance(exc, RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    else:
        detail = str(exc)
    if status == 500:
        log.error("operator API request failed", extra={"error": detail, "type": type(exc).__name__})
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def handle(_request: fastapi.Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


def install(app: fastapi.FastAPI) -> None:
    """The one handler, for the one tree of EdgeFleet errors and for request validation."""
    app.add_exception_handler(EdgeFleetError, handle)
    app.add_exception_handler(RequestValidationError, handle)

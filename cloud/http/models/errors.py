"""The one error body of the operator API, and the error responses every route declares."""

from __future__ import annotations

from typing import Any

import pydantic

__all__ = ["ERROR_RESPONSES", "ErrorBody", "Row"]


class ErrorBody(pydantic.BaseModel):
    """Every error the API answers: ``error`` is a stable code (``not_found``, ``forbidden``...), ``detail``
    says what went wrong with which object and what to do next."""

    error: str
    detail: str


class Row(pydantic.BaseModel):
    """A row whose named fields are typed and which may carry further reported fields."""

    model_config = pydantic.ConfigDict(extra="allow")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The request names something invalid (a query that does not parse, a bad cursor or parameter)"),
    401: _error("No valid bearer token"),
    403: _error("The token's role or sites do not allow this action"),
    404: _error("An id that names nothing"),
    409: _error("The object's state does not allow the change"),
    413: _error("A body over its size limit"),
    422: _error("A body or parameter that does not validate"),
    503: _error("The store is unavailable; try again"),
}

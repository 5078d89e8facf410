"""Pagination of the operator API's list routes: ``limit`` and an opaque ``cursor``, one rule for every list.

    GET /v1/devices?limit=50                  -> {"devices": [...50], "next_cursor": "WyJkZXYtMDUwIl0"}
    GET /v1/devices?limit=50&cursor=WyJk...   -> the next 50 after that one; "next_cursor": null on the last page

A cursor is the sort key of the last row returned (base64url of its JSON), so a page follows on from the
row it names even when rows were added or removed meanwhile (keyset pagination, not an offset). A cursor
that does not decode is a ``ConfigError`` (400 ``invalid_request``). ``DEFAULT_LIMIT`` is large so that a
caller that never pages (the CLI, the drills) sees a whole fleet of that size, as before pagination.

    rows, next_cursor = paginate(rows, key=lambda r: (r["device_id"],), limit=limit, cursor=cursor)
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import fastapi

from common.errors import ConfigError

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Cursor", "Limit", "decode_cursor", "encode_cursor", "paginate"]

DEFAULT_LIMIT = 10_000
MAX_LIMIT = 10_000

Limit = Annotated[int, fastapi.Query(ge=1, le=MAX_LIMIT, description="At most this many rows in the page.")]
Cursor = Annotated[str | None, fastapi.Query(max_length=1024, description="The `next_cursor` of the previous page.")]

T = TypeVar("T")
Key = tuple[Any, ...]


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"cursor {cursor[:40]!r} is not one this API made (pass the next_cursor of a page)") from exc
    if not isinstance(key, list) or not all(isinstance(k, (str, int, float)) and not isinstance(k, bool) for k in key):
        raise ConfigError(f"cursor {cursor[:40]!r} is not one this API made (pass the next_cursor of a page)")
    return tuple(key)


def paginate(
    rows: Sequence[T], *, key: Callable[[T], Key] | None, limit: int, cursor: str | None, descending: bool = False
) -> tuple[list[T], str | None]:
    """The page of ``rows`` after ``cursor`` in ``key`` order (highest first with ``descending``) and the
    cursor of the next page, or None when this is the last. ``rows`` need not be sorted.

    ``key=None`` keeps the order ``rows`` come in (a release's version order, newest alerts first) and
    pages by position in it: the cursor is then an offset."""
    if key is None:
        indexed = list(enumerate(rows))
        page, nxt = paginate(indexed, key=lambda r: (r[0],), limit=limit, cursor=cursor)
        return [r for _, r in page], nxt
    ordered = sorted(rows, key=lambda r: _comparable(key(r)), reverse=descending)
    if cursor is not None:
        after = _comparable(decode_cursor(cursor))
        ordered = [r for r in ordered if (_comparable(key(r)) < after if descending else _comparable(key(r)) > after)]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, (encode_cursor(key(page[-1])) if more and page else None)


def _comparable(key: Key) -> tuple[tuple[int, Any], ...]:
    """Keys mix numbers and strings (and None): each part is ordered by its kind first, then its value."""
    return tuple((0, 0) if k is None else (1, k) if isinstance(k, (int, float)) else (2, str(k)) for k in key)

"""Evaluating a parsed device query (``cloud.fleet.query.syntax``) against one device: ``matches(node, device)``.

A device is a mapping: ``id``, ``site``, ``hw``, ``fw``, ``state``, ``model``,
``os`` (scalars), ``groups`` and ``tags`` (collections of names) and ``attrs``
(the inventory attributes, nested mappings allowed: ``attr.network.ip`` reads
``attrs["network"]["ip"]``, or a flat key ``"network.ip"`` if present).

Evaluation rules:

* ``fw`` compares with version ordering (``"2.10" > "2.9"``, ``"2.1" == "2.1.0"``,
  ``"2.1-rc1" < "2.1"``); a bare number after ``fw`` is read as version text, so
  ``fw < 2.10`` means version 2.10, not the float 2.1.
* A number literal compares numerically (a device value that is not a number is
  unequal and unordered); a string literal compares as text; ``true``/``false``
  only with ``=``/``!=``.
* ``group = "x"`` means "is a member of x", ``group in (...)`` "of any of them";
  ``group`` and booleans take no ordering operator.
* A missing attribute satisfies no comparison except ``!=`` and ``not in``: for
  every query ``f != v`` is exactly ``not f = v``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from cloud.fleet.query.syntax import VERSION_FIELDS, And, Compare, In, Literal, Node, Not, Or, Tag

__all__ = ["matches"]

_MISSING = object()


def _version_key(text: str) -> tuple[Any, ...]:
    """Order versions: numeric parts numerically, trailing .0 ignored, a pre-release before its release.

    ``v2.1`` == ``2.1.0`` < ``2.1.1-rc1`` < ``2.1.1`` < ``2.10``; build metadata (``+abc``) is ignored.
    """
    text = text.strip().lstrip("vV").split("+", 1)[0]
    release, _, pre = text.partition("-")
    parts = [_part_key(p) for p in release.split(".")]
    while len(parts) > 1 and parts[-1] == (0, 0, ""):
        parts.pop()
    pre_key = (1,) if not pre else (0, *[_part_key(p) for p in re.split(r"[.\-]", pre)])
    return (tuple(parts), pre_key)


def _part_key(part: str) -> tuple[int, int, str]:
    # numbers before words; isascii() because "²".isdigit() is True but int("²") fails
    return (0, int(part), "") if part.isascii() and part.isdigit() else (1, 0, part)


def _lookup(device: Mapping[str, Any], field: str) -> Any:
    if not field.startswith("attr."):
        return device.get(field, _MISSING)
    attrs = device.get("attrs") or {}
    path = field[5:]
    if path in attrs:
        return attrs[path]
    value: Any = attrs
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _names(value: Any) -> Collection[str]:
    if value is None or value is _MISSING:
        return ()
    if isinstance(value, str):
        return (value,)
    return value


def _cmp(field: str, actual: Any, op: str, expected: Literal) -> bool:
    """``actual OP expected`` for one present value; False when the two cannot be compared."""
    if isinstance(expected, bool):
        eq = isinstance(actual, bool) and actual == expected
        return eq if op == "=" else not eq
    a: Any
    b: Any
    if isinstance(expected, (int, float)):
        if isinstance(actual, bool) or not isinstance(actual, (int, float, str)):
            return op == "!="
        try:
            a = float(actual)
        except ValueError:
            return op == "!="
        if math.isnan(a):
            return op == "!="
        b = expected
    elif field in VERSION_FIELDS:
        if actual is None or isinstance(actual, bool):
            return op == "!="
        a, b = _version_key(str(actual)), _version_key(expected)
    else:
        if actual is None or isinstance(actual, bool) or isinstance(actual, (Mapping, list, tuple, set)):
            return op == "!="
        a, b = str(actual), expected
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def matches(node: Node, device: Mapping[str, Any]) -> bool:
    """Whether ``device`` satisfies the parsed query ``node``."""
    if isinstance(node, And):
        return all(matches(item, device) for item in node.items)
    if isinstance(node, Or):
        return any(matches(item, device) for item in node.items)
    if isinstance(node, Not):
        return not matches(node.item, device)
    if isinstance(node, Tag):
        return node.name in _names(device.get("tags"))
    if isinstance(node, In):
        return any(matches(Compare(node.field, "=", v), device) for v in node.values)
    if isinstance(node, Compare):
        if node.field == "group":
            member = node.value in _names(device.get("groups"))
            return member if node.op == "=" else not member
        actual = _lookup(device, node.field)
        if actual is _MISSING:
            return node.op == "!="
        return _cmp(node.field, actual, node.op, node.value)
    raise TypeError(f"not a query node: {node!r}")

"""The device filter query language (``devices list --where`` and dynamic groups).

    site = "plant-7" and fw < "2.1" and tag:canary
    (model in ("gw-100", "gw-200") or attr.ram_mb >= 512) and not state = "retired"

Grammar, loosest binding first (``and`` binds tighter than ``or``; keywords are
case-insensitive)::

    query      := or_expr END
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | primary
    primary    := "(" or_expr ")" | "tag:" (NAME | STRING) | comparison
    comparison := field OP literal | field ["not"] "in" "(" literal ("," literal)* ")"
    field      := "id" | "site" | "group" | "hw" | "fw" | "state" | "model" | "os" | "attr." NAME ("." NAME)*
    OP         := "=" | "!=" | "<" | "<=" | ">" | ">="
    literal    := STRING ("..." or '...', backslash escapes) | NUMBER | "true" | "false"

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

Every syntax error raises ``QueryError`` with ``.position`` (0-based) and a
message that shows the query with a caret under the mistake.
"""

from __future__ import annotations

import math
from decimal import Decimal
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Union

from common.errors import QueryError

__all__ = ["And", "Compare", "FIELDS", "In", "Node", "Not", "Or", "Tag", "format_query", "matches", "parse"]

FIELDS = ("id", "site", "group", "hw", "fw", "state", "model", "os")
OPS = ("=", "!=", "<", "<=", ">", ">=")
_VERSION_FIELDS = frozenset({"fw"})
MAX_DEPTH = 50
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false"})

Literal = Union[str, int, float, bool]


@dataclass(frozen=True)
class Compare:
    field: str  # "site" or "attr.network.ip"
    op: str
    value: Literal


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Literal, ...]


@dataclass(frozen=True)
class Tag:
    name: str


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]  # two or more


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]  # two or more


Node = Union[Compare, In, Tag, Not, And, Or]


# --- tokens -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Tok:
    kind: str  # "name" "kw" "str" "num" "op" "(" ")" "," "tag" "end"
    text: str  # the word (keywords lower-cased), the decoded string or tag name, the number's digits
    pos: int  # offset of the token's first character
    end: int  # offset just past it


_SPACE = re.compile(r"\s+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\.?")
_NUM = re.compile(r"-?\d+(?:\.\d+)*")
_TAGNAME = re.compile(r"[A-Za-z0-9_.\-]+")
_OP = re.compile(r"!=|<=|>=|=|<|>")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


def _tokenize(query: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(query)
    while True:
        m = _SPACE.match(query, i)
        if m:
            i = m.end()
        if i >= n:
            toks.append(_Tok("end", "", n, n))
            return toks
        c, start = query[i], i
        if c in "(),":
            toks.append(_Tok(c, c, i, i + 1))
            i += 1
        elif c in "\"'":
            text, i = _string(query, i)
            toks.append(_Tok("str", text, start, i))
        elif (m := _OP.match(query, i)) is not None:
            toks.append(_Tok("op", m.group(), i, m.end()))
            i = m.end()
        elif (m := _NUM.match(query, i)) is not None:
            toks.append(_Tok("num", m.group(), i, m.end()))
            i = m.end()
        elif query[i : i + 4].lower() == "tag:":
            i += 4
            if i < n and query[i] in "\"'":
                name, i = _string(query, i)
            elif (m := _TAGNAME.match(query, i)) is not None:
                name, i = m.group(), m.end()
            else:
                raise QueryError(query, i, "expected a tag name after 'tag:'")
            if not name:
                raise QueryError(query, start + 4, "empty tag name")
            toks.append(_Tok("tag", name, start, i))
        elif (m := _NAME.match(query, i)) is not None:
            word = m.group()
            if word.endswith("."):
                raise QueryError(query, m.end(), f"expected a name after {word!r}")
            kind = "kw" if word.lower() in _KEYWORDS else "name"
            toks.append(_Tok(kind, word.lower() if kind == "kw" else word, i, m.end()))
            i = m.end()
        else:
            raise QueryError(query, i, f"unexpected character {c!r}")


def _string(query: str, start: int) -> tuple[str, int]:
    """Decode the quoted string opening at ``start``; return it and the offset just past it."""
    quote, out, i = query[start], [], start + 1
    while i < len(query):
        c = query[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\" and i + 1 < len(query):
            esc = query[i + 1]
            if esc not in _ESCAPES:
                raise QueryError(query, i, f"unknown escape '\\{esc}' in string")
            out.append(_ESCAPES[esc])
            i += 2
            continue
        out.append(c)
        i += 1
    raise QueryError(query, start, "unterminated string")


# --- parser -------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.toks = _tokenize(query)
        self.k = 0
        self.depth = 0  # open parentheses and nots: bounded so a hostile query cannot exhaust the stack

    @property
    def tok(self) -> _Tok:
        return self.toks[self.k]

    def fail(self, message: str, tok: _Tok | None = None) -> QueryError:
        tok = tok or self.tok
        found = "the end of the query" if tok.kind == "end" else repr(self.query[tok.pos : tok.end])
        return QueryError(self.query, tok.pos, f"{message}, found {found}")

    def take(self) -> _Tok:
        tok = self.tok
        self.k += 1
        return tok

    def is_kw(self, word: str) -> bool:
        return self.tok.kind == "kw" and self.tok.text == word

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise QueryError(self.query, 0, "empty query")
        node = self.or_expr()
        if self.tok.kind != "end":
            raise self.fail("expected 'and', 'or' or the end of the query")
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.is_kw("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.is_kw("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.is_kw("not"):
            self.nest()
            self.take()
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels")

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "(":
            self.nest()
            self.take()
            node = self.or_expr()
            if self.tok.kind != ")":
                raise self.fail(f"expected ')' to close the '(' at position {tok.pos}")
            self.take()
            self.depth -= 1
            return node
        if tok.kind == "tag":
            self.take()
            return Tag(tok.text)
        if tok.kind == "name":
            return self.comparison()
        raise self.fail("expected a field name, 'tag:NAME', 'not' or '('")

    def comparison(self) -> Node:
        ftok = self.take()
        field = ftok.text
        if not (field in FIELDS or (field.startswith("attr.") and len(field) > 5)):
            raise QueryError(
                self.query,
                ftok.pos,
                f"unknown field {field!r}: expected one of {', '.join(FIELDS)} or attr.NAME",
            )
        negated = False
        if self.is_kw("not"):
            self.take()
            if not self.is_kw("in"):
                raise self.fail("expected 'in' after 'not'")
            negated = True
        if self.is_kw("in"):
            self.take()
            node: Node = In(field, self.literal_list(field))
            return Not(node) if negated else node
        if self.tok.kind != "op":
            raise self.fail(f"expected a comparison operator ({' '.join(OPS)}) or 'in' after {field!r}")
        optok = self.take()
        if optok.text not in ("=", "!=") and field == "group":
            raise QueryError(self.query, optok.pos, "'group' takes only =, != or in: it is a membership test")
        value = self.literal(field)
        if isinstance(value, bool) and optok.text not in ("=", "!="):
            raise QueryError(self.query, optok.pos, "true and false take only = or !=")
        return Compare(field, optok.text, value)

    def literal_list(self, field: str) -> tuple[Literal, ...]:
        if self.tok.kind != "(":
            raise self.fail("expected '(' after 'in'")
        self.take()
        values = [self.literal(field)]
        while self.tok.kind == ",":
            self.take()
            values.append(self.literal(field))
        if self.tok.kind != ")":
            raise self.fail("expected ',' or ')' in the value list")
        self.take()
        return tuple(values)

    def literal(self, field: str) -> Literal:
        tok = self.tok
        if tok.kind == "str":
            self.take()
            return tok.text
        if tok.kind == "num":
            self.take()
            if field in _VERSION_FIELDS or tok.text.count(".") > 1:
                return tok.text  # version text: 2.10 is not 2.1
            return float(tok.text) if "." in tok.text else int(tok.text)
        if tok.kind == "kw" and tok.text in ("true", "false"):
            self.take()
            return tok.text == "true"
        raise self.fail("expected a value (a quoted string, a number, true or false)")


def parse(query: str) -> Node:
    """Parse ``query`` into an AST; raise ``QueryError`` (with ``.position``) if it is not valid."""
    return _Parser(query).parse()


# --- evaluation ---------------------------------------------------------------------------------

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
    elif field in _VERSION_FIELDS:
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


# --- formatting ---------------------------------------------------------------------------------

def _fmt_literal(value: Literal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):  # fixed notation (the grammar has no exponent), keeping a "."
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else text + ".0"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _fmt(node: Node, parent: int) -> str:
    # precedence: 0 or, 1 and, 2 not/atoms; parenthesize a child that binds looser than its place
    if isinstance(node, Or):
        text, own = " or ".join(_fmt(i, 1) for i in node.items), 0
    elif isinstance(node, And):
        text, own = " and ".join(_fmt(i, 2) for i in node.items), 1
    elif isinstance(node, Not):
        return "not " + _fmt(node.item, 2)
    elif isinstance(node, Tag):
        bare = _TAGNAME.fullmatch(node.name) is not None
        return "tag:" + (node.name if bare else _fmt_literal(node.name))
    elif isinstance(node, In):
        return f"{node.field} in ({', '.join(_fmt_literal(v) for v in node.values)})"
    elif isinstance(node, Compare):
        return f"{node.field} {node.op} {_fmt_literal(node.value)}"
    else:
        raise TypeError(f"not a query node: {node!r}")
    return f"({text})" if own < parent else text


def format_query(node: Node) -> str:
    """Canonical query text for ``node``: ``parse(format_query(n)) == n``."""
    return _fmt(node, 0)

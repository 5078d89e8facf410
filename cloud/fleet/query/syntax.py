"""The device filter query language's syntax (``devices list --where`` and dynamic groups): parse, format.

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

How a parsed query is evaluated against a device is ``cloud.fleet.query.match``.

Every syntax error raises ``QueryError`` with ``.position`` (0-based) and a
message that shows the query with a caret under the mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from common.errors import QueryError

__all__ = [
    "FIELDS", "OPS", "VERSION_FIELDS", "And", "Compare", "In", "Literal", "Node", "Not", "Or", "Tag", "format_query",
    "parse",
]

MAX_NUMBER_DIGITS = 400  # a number literal: room for any float written out in full (5e-324 is 326 characters)

FIELDS = ("id", "site", "group", "hw", "fw", "state", "model", "os")
OPS = ("=", "!=", "<", "<=", ">", ">=")
VERSION_FIELDS = frozenset({"fw"})  # fields compared with version ordering
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
            if len(m.group()) > MAX_NUMBER_DIGITS:  # int() refuses past 4300 digits: a typed 400, not a 500
                raise QueryError(query, i, f"a number of at most {MAX_NUMBER_DIGITS} characters")
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
            if field in VERSION_FIELDS or tok.text.count(".") > 1:
                return tok.text  # version text: 2.10 is not 2.1
            return float(tok.text) if "." in tok.text else int(tok.text)
        if tok.kind == "kw" and tok.text in ("true", "false"):
            self.take()
            return tok.text == "true"
        raise self.fail("expected a value (a quoted string, a number, true or false)")


def parse(query: str) -> Node:
    """Parse ``query`` into an AST; raise ``QueryError`` (with ``.position``) if it is not valid."""
    return _Parser(query).parse()


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

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cloud.fleet.query
from cloud.fleet.query import And, Compare, In, Not, Or, Tag, format_query, matches, parse
from common.errors import EdgeFleetError, QueryError

DEV = {
    "id": "dev-001",
    "site": "plant-7",
    "groups": {"line-a", "pilot"},
    "hw": "rev-c",
    "fw": "2.0.9",
    "state": "active",
    "model": "sensor-x",
    "os": "linux",
    "tags": {"canary", "north-wing"},
    "attrs": {"ram_mb": 512, "secure_boot": True, "network": {"ip": "10.0.0.7"}, "free_mb": "1024"},
}


def test_all() -> None:
    assert cloud.fleet.query.__all__ == sorted(cloud.fleet.query.__all__)
    assert set(cloud.fleet.query.__all__) == {
        "FIELDS", "And", "Compare", "In", "Node", "Not", "Or", "Tag", "format_query", "matches", "parse"
    }


# --- parsing: every construct ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "query, ast",
    [
        ('site = "plant-7"', Compare("site", "=", "plant-7")),
        ("site = 'plant-7'", Compare("site", "=", "plant-7")),
        ('state != "retired"', Compare("state", "!=", "retired")),
        ("attr.ram_mb < 1024", Compare("attr.ram_mb", "<", 1024)),
        ("attr.ram_mb <= 1.5", Compare("attr.ram_mb", "<=", 1.5)),
        ("attr.temp > -3", Compare("attr.temp", ">", -3)),
        ('hw >= "rev-b"', Compare("hw", ">=", "rev-b")),
        ("attr.secure_boot = true", Compare("attr.secure_boot", "=", True)),
        ("attr.secure_boot != FALSE", Compare("attr.secure_boot", "!=", False)),
        ("attr.network.ip = '10.0.0.7'", Compare("attr.network.ip", "=", "10.0.0.7")),
        ('model in ("a", "b")', In("model", ("a", "b"))),
        ('os in ("linux")', In("os", ("linux",))),
        ('os not in ("linux", 3)', Not(In("os", ("linux", 3)))),
        ("tag:canary", Tag("canary")),
        ("TAG:north-wing", Tag("north-wing")),
        ('tag:"with space"', Tag("with space")),
        ('group = "pilot"', Compare("group", "=", "pilot")),
        ('id = "dev-001"', Compare("id", "=", "dev-001")),
        # fw literals are version text, even when written as bare numbers
        ("fw < 2.10", Compare("fw", "<", "2.10")),
        ('fw >= "2.1.0-rc1"', Compare("fw", ">=", "2.1.0-rc1")),
        # a dotted bare number elsewhere is text too
        ("attr.bootloader = 1.2.3", Compare("attr.bootloader", "=", "1.2.3")),
        ('site = "say \\"hi\\" \\\\ there"', Compare("site", "=", 'say "hi" \\ there')),
        ("not tag:canary", Not(Tag("canary"))),
        ("not not tag:canary", Not(Not(Tag("canary")))),
        ("(tag:canary)", Tag("canary")),
        ("tag:a and tag:b and tag:c", And((Tag("a"), Tag("b"), Tag("c")))),
        ("tag:a or tag:b or tag:c", Or((Tag("a"), Tag("b"), Tag("c")))),
        ("tag:a AND tag:b Or tag:c", Or((And((Tag("a"), Tag("b"))), Tag("c")))),
        (
            'site = "plant-7" and fw < "2.1" and tag:canary',
            And((Compare("site", "=", "plant-7"), Compare("fw", "<", "2.1"), Tag("canary"))),
        ),
        ("  tag:a\n\tand\ttag:b  ", And((Tag("a"), Tag("b")))),
    ],
)
def test_valid_queries(query: str, ast: object) -> None:
    assert parse(query) == ast


def test_and_binds_tighter_than_or() -> None:
    assert parse("tag:a or tag:b and tag:c") == Or((Tag("a"), And((Tag("b"), Tag("c")))))
    assert parse("tag:a and tag:b or tag:c") == Or((And((Tag("a"), Tag("b"))), Tag("c")))


def test_not_binds_tighter_than_and() -> None:
    assert parse("not tag:a and tag:b") == And((Not(Tag("a")), Tag("b")))
    assert parse("not (tag:a and tag:b)") == Not(And((Tag("a"), Tag("b"))))


def test_parentheses_override_precedence() -> None:
    assert parse("(tag:a or tag:b) and tag:c") == And((Or((Tag("a"), Tag("b"))), Tag("c")))
    assert parse("((tag:a))") == Tag("a")


def test_precedence_changes_the_answer() -> None:
    # a device with tag a only: "a or (b and c)" is true, "(a or b) and c" is false
    dev = {"tags": {"a"}}
    assert matches(parse("tag:a or tag:b and tag:c"), dev)
    assert not matches(parse("(tag:a or tag:b) and tag:c"), dev)


# --- invalid queries: the exact position ----------------------------------------------------------

@pytest.mark.parametrize(
    "query, position, cause",
    [
        ("", 0, "empty query"),
        ("   ", 0, "empty query"),
        ('site = "plant-7', 7, "unterminated string"),
        ("sight = 'x'", 0, "unknown field 'sight'"),
        ("tag:a and size = 1", 10, "unknown field 'size'"),
        ('site "x"', 5, "expected a comparison operator"),
        ("site", 4, "expected a comparison operator"),
        ("site =", 6, "expected a value"),
        ("site = = 'x'", 7, "expected a value"),
        ("site = plant", 7, "expected a value"),
        ("site == 'x'", 6, "expected a value"),
        ("site = 'x' tag:a", 11, "expected 'and', 'or' or the end"),
        ("tag:a and", 9, "expected a field name"),
        ("tag:a or or tag:b", 9, "expected a field name"),
        ("(tag:a", 6, "expected ')' to close the '(' at position 0"),
        ("tag:a and (tag:b or (tag:c)", 27, "expected ')' to close the '(' at position 10"),
        ("tag:a)", 5, "expected 'and', 'or' or the end"),
        ("()", 1, "expected a field name"),
        ("site = 'x' & tag:a", 11, "unexpected character '&'"),
        ("site ~ 'x'", 5, "unexpected character '~'"),
        ("tag:", 4, "expected a tag name"),
        ("tag: a", 4, "expected a tag name"),
        ("tag:''", 4, "empty tag name"),
        ("attr. = 1", 5, "expected a name after 'attr.'"),
        ("attr = 1", 0, "unknown field 'attr'"),
        ("model in 'a'", 9, "expected '(' after 'in'"),
        ("model in ()", 10, "expected a value"),
        ("model in ('a' 'b')", 14, "expected ',' or ')'"),
        ("model in ('a',)", 14, "expected a value"),
        ("model not = 'a'", 10, "expected 'in' after 'not'"),
        ("group < 'a'", 6, "'group' takes only"),
        ("attr.x > true", 7, "true and false take only"),
        ("site = 'a\\q'", 9, "unknown escape"),
        ("fw < 2.1rc1", 8, "expected 'and', 'or' or the end"),
        ("and tag:a", 0, "expected a field name"),
    ],
)
def test_invalid_queries_report_the_position(query: str, position: int, cause: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(query)
    err = info.value
    assert err.position == position
    assert cause in err.cause
    assert err.query == query


def test_error_message_shows_the_query_with_a_caret_under_the_mistake() -> None:
    with pytest.raises(QueryError) as info:
        parse('site = "plant-7" and fw <')
    assert info.value.position == 25
    lines = str(info.value).splitlines()
    assert lines[0].startswith("invalid query at position 25: expected a value")
    assert lines[1] == '  site = "plant-7" and fw <'
    assert lines[2] == "  " + " " * 25 + "^"


def test_query_error_is_an_edgefleet_error_and_a_value_error() -> None:
    with pytest.raises(EdgeFleetError):
        parse("nope")
    with pytest.raises(ValueError):
        parse("nope")


# --- evaluation ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "query, expected",
    [
        ('site = "plant-7" and fw < "2.1" and tag:canary', True),
        ('site = "plant-8"', False),
        ('site != "plant-8"', True),
        ('site in ("plant-1", "plant-7")', True),
        ('site not in ("plant-1", "plant-7")', False),
        ("tag:canary", True),
        ("tag:nope", False),
        ('group = "pilot"', True),
        ('group != "pilot"', False),
        ('group = "line-b"', False),
        ('group in ("x", "line-a")', True),
        ("attr.ram_mb >= 512", True),
        ("attr.ram_mb > 512", False),
        ("attr.ram_mb = 512.0", True),
        ("attr.free_mb > 1000", True),  # a numeric string compares as a number
        ('attr.ram_mb = "512"', True),  # a string literal compares as text
        ("attr.secure_boot = true", True),
        ("attr.secure_boot != true", False),
        ("attr.secure_boot = 1", False),  # a bool is not a number
        ("attr.network.ip = '10.0.0.7'", True),
        ("site > 3", False),  # text is not ordered against a number
        ("site != 3", True),
        ('hw < "rev-d"', True),
        ('state = "active" and not tag:canary', False),
        ('state = "maintenance" or tag:north-wing', True),
    ],
)
def test_matches(query: str, expected: bool) -> None:
    assert matches(parse(query), DEV) is expected


@pytest.mark.parametrize(
    "fw, query, expected",
    [
        ("2.0.9", 'fw < "2.1"', True),
        ("2.9", "fw < 2.10", True),  # version order, not float order
        ("2.10", 'fw > "2.9"', True),
        ("2.1", 'fw = "2.1.0"', True),
        ("v2.1", 'fw = "2.1"', True),
        ("2.1.0-rc1", 'fw < "2.1.0"', True),
        ("2.1.0-rc1", 'fw > "2.0.9"', True),
        ("2.1.0-rc2", 'fw > "2.1.0-rc1"', True),
        ("2.1.0+build7", 'fw = "2.1.0"', True),
        ("10.0", 'fw >= "9.99"', True),
        ("2.1", 'fw in ("2.1.0", "3.0")', True),
        ("2.1", 'fw != "2.1.0"', False),
    ],
)
def test_fw_compares_with_version_ordering(fw: str, query: str, expected: bool) -> None:
    assert matches(parse(query), {"fw": fw}) is expected


def test_missing_attribute_satisfies_only_not_equal() -> None:
    dev: dict[str, object] = {"site": "p"}
    for q in ('fw < "9"', 'fw = "1"', 'fw >= "0"', "attr.ram_mb > 0", "attr.a.b = 1", 'model in ("a")', "tag:x"):
        assert not matches(parse(q), dev), q
    for q in ('fw != "1"', "attr.ram_mb != 0", 'model not in ("a")', "not tag:x", 'group != "g"'):
        assert matches(parse(q), dev), q


def test_flat_dotted_attribute_key_is_found() -> None:
    assert matches(parse("attr.network.ip = 'x'"), {"attrs": {"network.ip": "x"}})


def test_groups_and_tags_given_as_a_single_string_are_one_name() -> None:
    dev = {"groups": "pilot", "tags": "canary"}
    assert matches(parse("group = 'pilot' and tag:canary"), dev)
    assert not matches(parse("group = 'p' or tag:c"), dev)


@pytest.mark.parametrize("value", [None, [1, 2], {"a": 1}, float("nan"), "abc"])
def test_odd_values_never_raise(value: object) -> None:
    for q in ["attr.v < 3", "attr.v = 'x'", "attr.v != 3", "attr.v >= 'a'", "fw < '2'"]:
        matches(parse(q), {"attrs": {"v": value}, "fw": value})


def test_not_equal_is_exactly_not_equal() -> None:
    devices = [DEV, {}, {"attrs": {"ram_mb": "x"}}, {"attrs": {"ram_mb": None}}, {"fw": None}, {"site": 7}]
    for field, lit in [("site", "'plant-7'"), ("attr.ram_mb", "512"), ("fw", "'2.0.9'"), ("site", "7")]:
        eq, ne = parse(f"{field} = {lit}"), parse(f"{field} != {lit}")
        for dev in devices:
            assert matches(ne, dev) is (not matches(eq, dev)), (field, lit, dev)


# --- format_query round trip ---------------------------------------------------------------------

def test_format_query_is_canonical_and_round_trips() -> None:
    q = "(tag:a or tag:b) and not (site = 'x' or fw < 2.10) or attr.r in (1, 2.5, true, \"q\\\"\")"
    node = parse(q)
    text = format_query(node)
    assert text == (
        '(tag:a or tag:b) and not (site = "x" or fw < "2.10") or attr.r in (1, 2.5, true, "q\\"")'
    )
    assert parse(text) == node


_literals = st.one_of(
    st.text(max_size=8), st.integers(-10**6, 10**6), st.booleans(), st.floats(-1e6, 1e6, allow_nan=False).map(abs)
)
_fields = st.sampled_from(["site", "hw", "state", "model", "os", "id", "attr.x", "attr.a.b"])
_leaves = st.one_of(
    st.builds(Tag, st.text(min_size=1, max_size=8)),
    st.builds(
        Compare, _fields, st.sampled_from(["=", "!="]), _literals
    ),
    st.builds(Compare, _fields, st.sampled_from(["<", "<=", ">", ">="]), st.one_of(st.text(max_size=5), st.integers())),
    st.builds(In, _fields, st.lists(_literals, min_size=1, max_size=3).map(tuple)),
    st.builds(Compare, st.just("fw"), st.sampled_from(["<", ">="]), st.from_regex(r"\A[0-9]{1,2}(\.[0-9]{1,2}){0,2}\Z")),
)
_trees = st.recursive(
    _leaves,
    lambda kids: st.one_of(
        st.builds(Not, kids),
        st.builds(And, st.lists(kids.filter(lambda k: not isinstance(k, And)), min_size=2, max_size=3).map(tuple)),
        st.builds(Or, st.lists(kids.filter(lambda k: not isinstance(k, Or)), min_size=2, max_size=3).map(tuple)),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(_trees)
def test_format_then_parse_gives_the_same_tree(node: object) -> None:
    assert parse(format_query(node)) == node  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("siteagfwr:.=!<>()'\" \\,0123456789-andortx")), max_size=40))
def test_garbage_raises_only_query_error_with_a_position_inside_the_query(text: str) -> None:
    try:
        node = parse(text)
    except QueryError as err:
        assert 0 <= err.position <= len(text)
    else:
        matches(node, DEV)


def test_nesting_is_bounded_with_a_query_error_not_a_recursion_error() -> None:
    depth = cloud.fleet.query.syntax.MAX_DEPTH
    assert parse("(" * depth + "tag:a" + ")" * depth) == Tag("a")
    with pytest.raises(QueryError) as info:
        parse("(" * (depth + 1) + "tag:a" + ")" * (depth + 1))
    assert info.value.position == depth
    with pytest.raises(QueryError) as info:
        parse("not " * 10_000 + "tag:a")
    assert info.value.position == 4 * depth
    assert "nested deeper" in info.value.cause


def test_unicode_digits_in_versions_do_not_crash() -> None:
    assert not matches(parse('fw = "2.1"'), {"fw": "2.\u00b2"})
    assert matches(parse('fw > "2.1"'), {"fw": "2.\u00b2"})  # words sort after numbers


def test_a_huge_number_is_a_query_error_not_a_crash() -> None:
    """int() refuses past 4,300 digits: a 5,000-digit literal is a QueryError (the API's 400), naming where."""
    from cloud.fleet import query
    from common.errors import QueryError

    with pytest.raises(QueryError, match="position 9: a number of at most 400 characters"):
        query.parse("attr.x > " + "9" * 5000)

"""The codec's fast paths (predicates, the TelemetryBatch record loop, encode_forward) agree with its
field-by-field checks: they accept exactly what the checks accept, and what they refuse is named by the checks."""

from __future__ import annotations

import math

import msgpack
import pytest

from common.errors import ProtocolError
from common.protocol import ForwardRecord, TelemetryBatch, TelemetryRecord, decode, encode, encode_record
from common.protocol import codec
from common.protocol.codec import MAX_STR, MAX_VALUES, encode_forward

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

SCALARS = [
    0, 1, -1, INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1, 2**64 - 1, True, False, None,
    0.0, -0.0, 1.5, 1e308, -1e308, math.inf, -math.inf, math.nan, 5e-324,
    "", "x", "x" * MAX_STR, "x" * (MAX_STR + 1), "é" * MAX_STR, "é" * (MAX_STR + 1), "🚀" * MAX_STR,
    b"", b"x", [], [1], {}, {"a": 1},
]

MAPS = [
    {},
    {"a": 1.5, "b": -3, "c": "ok"},
    {"k" * MAX_STR: 1},
    {"k" * (MAX_STR + 1): 1},
    {f"m{i}": 1 for i in range(MAX_VALUES)},
    {f"m{i}": 1 for i in range(MAX_VALUES + 1)},
    {b"k": 1.0},
    [1.0],
    "not a map",
    *({"v": v} for v in SCALARS),
]


def _accepts(check, value) -> bool:
    try:
        check(value, "where")
    except ProtocolError:
        return False
    return True


@pytest.mark.parametrize("value", SCALARS, ids=repr)
@pytest.mark.parametrize("kind", ["str", "int", "bytes"])
def test_scalar_predicates_agree_with_checks(kind: str, value: object) -> None:
    assert codec.OKS[kind](value) == _accepts(codec.CHECKS[kind], value)


@pytest.mark.parametrize("value", MAPS, ids=lambda v: repr(v)[:40])
@pytest.mark.parametrize("kind", ["dict[str, float | str]", "dict[str, str]"])
def test_map_predicates_agree_with_checks(kind: str, value: object) -> None:
    # a predicate may only be stricter than its check if the check then explains; here they must agree
    assert codec.OKS[kind](value) == _accepts(codec.CHECKS[kind], value)


def _frame(records: list) -> bytes:
    return msgpack.packb([TelemetryBatch.KIND, 1, "dev-1", "bulk", 0, records], use_bin_type=True)


WIRE_SCALARS = [v for v in SCALARS if not (type(v) is int and v < INT64_MIN)]  # msgpack cannot carry these


@pytest.mark.parametrize("bad", [*WIRE_SCALARS, [1, 2, "k"], [1, 2, "k", {}, 5]], ids=lambda v: repr(v)[:40])
@pytest.mark.parametrize("position", [0, 1, 2, 3, "whole"])
def test_record_loop_refuses_what_the_checks_refuse(bad: object, position: object) -> None:
    good = [7, 1_700_000_000_000, "metrics", {"t": 21.5, "n": 3, "s": "ok"}]
    if position == "whole":
        record = bad
    else:
        record = list(good)
        record[position] = bad
    frame = _frame([good, record])
    check = codec._record_of(TelemetryRecord)[0]
    if _accepts(check, record):
        batch = decode(frame)
        assert batch.records[1] == TelemetryRecord(*record)
    else:
        with pytest.raises(ProtocolError, match=r"^TelemetryBatch\.records\[1\]"):
            decode(frame)


def test_encode_forward_is_encode_record_of_each() -> None:
    records = [TelemetryRecord(s, 1_700_000_000_000 + s, "metrics", {"t": 21.5, "n": -3, "s": "ok"}) for s in range(1, 50)]
    expected = [encode_record(ForwardRecord("dev-1", "bulk", r.seq, r.ts_ms, r.kind, r.values)) for r in records]
    assert encode_forward("dev-1", "bulk", records) == expected
    assert decode(encode(TelemetryBatch("dev-1", "bulk", 0, records))).records == records

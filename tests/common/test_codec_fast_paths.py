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


# -- decode_forwarding: TelemetryBatch as outbox entries, cut from the frame ---------------------------


def _forward_frames() -> list[bytes]:
    good = [[s, 1_700_000_000_000 + s, "metrics", {"t": 21.5, "n": -3, "s": "ok", "é": "✓"}] for s in range(1, 40)]
    return [
        _frame(good),
        _frame([]),
        msgpack.packb([TelemetryBatch.KIND, 1, "d" * MAX_STR, "critical", INT64_MAX, good[:1]]),
        _frame([[1, 2, "k", {}]]),
    ]


@pytest.mark.parametrize("frame", _forward_frames(), ids=range(len(_forward_frames())))
def test_decode_forwarding_cuts_the_entries_encode_forward_makes(frame: bytes) -> None:
    batch = decode(frame)
    view = codec.decode_forwarding(frame)
    assert view == codec.TelemetryEntries.of(batch)
    assert view.entries == encode_forward(batch.device_id, batch.stream, batch.records)
    assert view.seqs == [r.seq for r in batch.records]


@pytest.mark.parametrize("frame", _forward_frames(), ids=range(len(_forward_frames())))
def test_decode_forwarding_shares_the_records_it_checked(frame: bytes) -> None:
    """Observers of a batch read ``records`` (what the codec checked) instead of decoding the entries again."""
    view = codec.decode_forwarding(frame)
    assert view.records == [[r.seq, r.ts_ms, r.kind, r.values] for r in decode(frame).records]
    assert [tuple(r) for r in view.records] == [
        (f.seq, f.ts_ms, f.kind, f.values) for f in map(codec.decode_record, view.entries)]


def test_decode_forwarding_keeps_a_non_minimal_encoding_and_the_same_values() -> None:
    # ints as int64, a float as float32, the record array as array16, a map as map16: all valid msgpack
    record = (
        b"\x94" + b"\xd3" + (5).to_bytes(8, "big", signed=True) + b"\xcd\x03\xe8" + b"\xa1k"
        + b"\xde\x00\x02" + b"\xa1f" + b"\xca\x3f\xc0\x00\x00" + b"\xa1i" + b"\xd3" + (7).to_bytes(8, "big", signed=True)
    )
    head = msgpack.packb(TelemetryBatch.KIND) + b"\x01" + msgpack.packb("dev-1") + msgpack.packb("bulk") + b"\x00"
    for records in (b"\x91" + record, b"\xdc\x00\x01" + record, b"\x91" + b"\xdc\x00\x04" + record[1:]):
        frame = b"\x96" + head + records
        batch = decode(frame)
        view = codec.decode_forwarding(frame)
        assert view.seqs == [5]
        assert [codec.decode_record(e) for e in view.entries] == [
            ForwardRecord("dev-1", "bulk", r.seq, r.ts_ms, r.kind, r.values) for r in batch.records
        ]


def _bad_forward_frames() -> list[bytes]:
    good = [1, 2, "k", {"v": 1.0}]
    frames = [
        _frame([good, [1, 2, "k", {"v": math.nan}]]),
        _frame([good, [1, 2, "k", {"v": True}]]),
        _frame([good, [1, 2, "k" * (MAX_STR + 1), {}]]),
        _frame([good, [1, 2, "k"]]),
        _frame([good, "record"]),
        _frame("records"),
        msgpack.packb([TelemetryBatch.KIND, 1, "dev-1", "bulk", 0]),
        msgpack.packb([TelemetryBatch.KIND, 1, "dev-1", "bulk", 0, [good], "extra"]),
        msgpack.packb([TelemetryBatch.KIND, 99, "dev-1", "bulk", 0, [good]]),
        msgpack.packb([TelemetryBatch.KIND, 1, 7, "bulk", 0, [good]]),
        msgpack.packb([TelemetryBatch.KIND, 1, "dev-1", "bulk", 2**64 - 1, [good]]),
        msgpack.packb([TelemetryBatch.KIND, 1, "dev-1", "bulk", True, [good]]),
        _frame([good]) + b"\x00",  # trailing bytes
        _frame([good, good])[:-3],  # cut short
        b"\x96\x0a\x01\xa5dev-1\xa4bulk\x00\x91\x94\x01\x02\xc1\x80",  # a never-used byte for the kind
        b"\x96" + b"\xff" * 20,
        b"",
    ]
    return frames


@pytest.mark.parametrize("frame", _bad_forward_frames(), ids=range(len(_bad_forward_frames())))
def test_decode_forwarding_refuses_with_the_message_decode_gives(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as expected:
        decode(frame)
    with pytest.raises(ProtocolError) as got:
        codec.decode_forwarding(frame)
    assert (type(got.value), str(got.value), got.value.kind) == (type(expected.value), str(expected.value), expected.value.kind)


def test_decode_forwarding_returns_other_messages_as_decode_does() -> None:
    from common.protocol import Hello

    frame = encode(Hello("dev-1", "device", "site", 1, 1))
    assert codec.decode_forwarding(frame) == decode(frame)


# -- decode_records: a ForwardBatch's entries as one stream, each entry as decode_record says -----------------


def _one_by_one(entries: list) -> list:
    out = []
    for e in entries:
        try:
            out.append(codec.decode_record(e))
        except ProtocolError as exc:
            out.append(("refused", str(exc)))
    return out


def _as_compared(results: list) -> list:
    return [("refused", str(r)) if isinstance(r, ProtocolError) else r for r in results]


GOOD_ENTRY = encode_record(ForwardRecord("dev-1", "bulk", 1, 1_700_000_000_000, "metrics", {"t": 21.5, "n": 3, "s": "ok"}))


@pytest.mark.parametrize("bad", [*WIRE_SCALARS, ["d", "bulk", 1, 2, "k"], ["d", "bulk", 1, 2, "k", {}, 5]],
                         ids=lambda v: repr(v)[:40])
@pytest.mark.parametrize("position", [0, 1, 2, 3, 4, 5, "whole"])
def test_decode_records_agrees_with_decode_record_field_by_field(bad: object, position: object) -> None:
    good = ["dev-1", "bulk", 7, 1_700_000_000_000, "metrics", {"t": 21.5, "n": 3, "s": "ok"}]
    record = bad if position == "whole" else [*good[:position], bad, *good[position + 1:]]  # type: ignore[misc]
    entries = [GOOD_ENTRY, msgpack.packb(record, use_bin_type=True), GOOD_ENTRY]
    assert _as_compared(codec.decode_records(entries)) == _one_by_one(entries)


@pytest.mark.parametrize("entries", [
    [GOOD_ENTRY, GOOD_ENTRY[:-4], GOOD_ENTRY[-4:] + GOOD_ENTRY],  # an entry cut where the next one goes on
    [GOOD_ENTRY + GOOD_ENTRY, GOOD_ENTRY],  # two records in one entry
    [GOOD_ENTRY, GOOD_ENTRY[:-1]],  # the last one cut short
    [GOOD_ENTRY, b"", GOOD_ENTRY],  # an empty entry
    [GOOD_ENTRY, b"\xc1", GOOD_ENTRY],  # a byte msgpack never uses
    [GOOD_ENTRY, b"\xff" * 20],
    [GOOD_ENTRY, GOOD_ENTRY + b"\x00"],  # trailing bytes
    [GOOD_ENTRY] * 3,
    [],
], ids=range(9))
def test_decode_records_keeps_each_entry_apart(entries: list) -> None:
    got = codec.decode_records(entries)
    assert len(got) == len(entries)
    assert _as_compared(got) == _one_by_one(entries)


def test_split_records_gives_the_records_and_each_refused_entry_at_its_position() -> None:
    entries = [b"\xc1", GOOD_ENTRY, GOOD_ENTRY[:-1], GOOD_ENTRY, b""]
    records, errors = codec.split_records(entries)
    assert records == [codec.decode_record(GOOD_ENTRY)] * 2
    assert [i for i, _ in errors] == [0, 2, 4] and all(isinstance(e, ProtocolError) for _, e in errors)
    assert _as_compared(codec.decode_records(entries)) == _one_by_one(entries)


def _raw_record(values_map: bytes, device: bytes = b"\xa5dev-1") -> bytes:
    """A ForwardRecord entry written byte by byte: its device field and its values map as given."""
    return b"\x96" + device + b"".join(msgpack.packb(x) for x in ["bulk", 7, 1_700_000_000_000, "metrics"]) + values_map


@pytest.mark.parametrize("entry", [
    _raw_record(b"\x81\xa1t\xcb" + b"\x40\x35\x80\x00\x00\x00\x00\x00", device=b"\xa5de\xff-1"),  # not UTF-8
    _raw_record(b"\x81\xa1t\x01", device=b"\xa5d\xed\xa0\x80e"),  # a surrogate, encoded
    _raw_record(b"\x81\xa1t\x01", device=b"\xa5d\xc0\xafev"),  # an overlong encoding
    _raw_record(b"\x82\xa1a\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00\xa1a\x01"),  # a key twice, the first value NaN
    _raw_record(b"\x82\xa1a\x02\xa1a\x01"),  # a key twice, both fine: the last wins
    _raw_record(b"\x81\xa1a\xca\x7f\x80\x00\x00"),  # a float32 infinity
    _raw_record(b"\x81\xa1a\xca\x3f\x80\x00\x00"),  # a float32 1.0
    _raw_record(b"\x81\xc4\x01a\x01"),  # a bin key
    _raw_record(b"\x81\xa1a\xd6\xff\x00\x00\x00\x01"),  # a timestamp extension
    _raw_record(b"\x81\xa1a\x01", device=b"\xd9\x05dev-1"),  # a short string written as str 8
    _raw_record(b"\x81\xa1a\xcf" + (2**63).to_bytes(8, "big")),  # uint64 past int64
], ids=range(11))
def test_decode_records_agrees_with_decode_record_on_hostile_corners(entry: bytes) -> None:
    # decode_records' typed decoder and decode_record's checks are two readings of one rule; a corner either one
    # reads differently would let the cloud store what a record's own check refuses (or the other way round)
    entries = [GOOD_ENTRY, entry, GOOD_ENTRY]
    assert _as_compared(codec.decode_records(entries)) == _one_by_one(entries)

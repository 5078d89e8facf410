"""Hypothesis fuzzing of ``decode``, ``decode_record`` and ``unpack_entries``.

The property, for any input: decoding returns a valid value that re-encodes and decodes equal, or raises
``ProtocolError``. Any other exception fails the test. Hostile inputs are crafted with msgpack (and zstandard)
directly.
"""

from __future__ import annotations

import dataclasses
import math

import msgpack
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import ProtocolError
from common.protocol.codec import (
    MAX_FRAME,
    MAX_STR,
    decode,
    decode_record,
    encode,
    encode_record,
    pack_entries,
    unpack_entries,
)
from common.protocol.messages import (
    MESSAGE_TYPES,
    STREAMS,
    ForwardBatch,
    ForwardRecord,
    Message,
    TelemetryRecord,
)

FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,  # keep the shared checkout free of .hypothesis/ state
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MESSAGE_CLASSES = tuple(MESSAGE_TYPES.values())


# -- the property ------------------------------------------------------------------------


def check_decode(data: bytes) -> Message | None:
    try:
        msg = decode(data)
    except ProtocolError:
        return None
    assert isinstance(msg, MESSAGE_CLASSES)
    assert decode(encode(msg)) == msg
    if isinstance(msg, ForwardBatch):
        for entry in check_unpack_entries(msg.blob) or []:
            check_decode_record(entry)
    return msg


def check_decode_record(data: bytes) -> ForwardRecord | None:
    try:
        rec = decode_record(data)
    except ProtocolError:
        return None
    assert type(rec) is ForwardRecord
    assert decode_record(encode_record(rec)) == rec
    return rec


def check_unpack_entries(blob: bytes) -> list[bytes] | None:
    try:
        entries = unpack_entries(blob)
    except ProtocolError:
        return None
    assert type(entries) is list and all(type(e) is bytes for e in entries)
    assert unpack_entries(pack_entries(entries)) == entries
    return entries


# -- strategies --------------------------------------------------------------------------

# every integer msgpack can carry, with the 64-bit edges drawn often
EDGE_INTS = [0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**31) - 1]
ints = st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.sampled_from(EDGE_INTS))
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -0.0])
)
# short strings, and strings right at the length limit (built cheaply from one drawn character)
long_texts = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(MAX_STR - 1, MAX_STR + 2))
texts = st.one_of(st.text(max_size=20), long_texts)
exts = st.one_of(
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, st.binary(max_size=32), exts)
keys = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.binary(max_size=4), st.none(), st.booleans(), st.floats())
any_msgpack = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(keys, children, max_size=6),
    ),
    max_leaves=15,
)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, datetime=False)


def zstd(raw: bytes, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=content_size).compress(raw)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# the right shape for each field annotation, with values straying over the limits now and then
map_keys = st.one_of(st.text(max_size=12), st.text(max_size=12), long_texts)
streams = st.one_of(st.sampled_from(STREAMS), texts)
record_values = st.dictionaries(
    map_keys,
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), ints, ints, floats, st.booleans(), texts, texts),
    max_size=6,
)
string_args = st.dictionaries(map_keys, st.one_of(texts, texts, texts, ints, st.booleans(), st.none()), max_size=6)


def too_many(value: st.SearchStrategy) -> st.SearchStrategy:
    return st.dictionaries(st.text(max_size=4), value, min_size=60, max_size=70)


@st.composite
def near_blobs(draw: st.DrawFn) -> bytes:
    """ForwardBatch.blob: valid packed entries, packed near-records, zstd of anything, or raw bytes."""
    how = draw(st.integers(0, 3))
    if how == 0:
        return pack_entries([pack(r) for r in draw(st.lists(near_record(ForwardRecord), max_size=3))])
    if how == 1:
        return zstd(pack(draw(any_msgpack)), draw(st.booleans()))
    if how == 2:
        return ZSTD_MAGIC + draw(st.binary(max_size=24))
    return draw(st.binary(max_size=32))


def shaped(annotation: str) -> st.SearchStrategy:
    if annotation == "str":
        return texts
    if annotation == "int":
        return ints
    if annotation == "bytes":
        return st.deferred(near_blobs)
    if annotation == "list[bytes]":
        return st.lists(st.binary(max_size=32), max_size=5)
    if annotation == "list[str]":
        return st.lists(st.one_of(texts, st.binary(max_size=8)), max_size=5)
    if annotation == "dict[str, float | str]":
        return st.one_of(record_values, too_many(st.one_of(st.just(1.0), st.just("v"))))
    if annotation == "dict[str, str]":
        return st.one_of(string_args, too_many(st.just("v")))
    if annotation == "list[TelemetryRecord]":
        return st.lists(st.deferred(lambda: near_record(TelemetryRecord)), max_size=4)
    raise AssertionError(f"no fuzz strategy for field type {annotation!r}: add one")


@st.composite
def mutated(draw: st.DrawFn, values: list) -> list:
    """Usually unchanged; else one value replaced by anything, or one dropped, or one appended."""
    how = draw(st.integers(0, 9))
    if how == 0 and values:
        values[draw(st.integers(0, len(values) - 1))] = draw(any_msgpack)
    elif how == 1 and values:
        del values[draw(st.integers(0, len(values) - 1))]
    elif how == 2:
        values.append(draw(any_msgpack))
    return values


def near_record(cls: type) -> st.SearchStrategy:
    """The array of a record's (or message's) fields: plausible values, now and then mutated."""
    return st.tuples(*[shaped(f.type) for f in dataclasses.fields(cls)]).map(list).flatmap(mutated)


@st.composite
def near_frames(draw: st.DrawFn) -> bytes:
    cls = draw(st.sampled_from(MESSAGE_CLASSES))
    odd_kind, odd_version = draw(st.integers(0, 9)) == 0, draw(st.integers(0, 9)) == 0
    kind = draw(st.sampled_from([0, 99, -1, True, "1", None, 2.0])) if odd_kind else cls.KIND
    version = draw(st.sampled_from([0, 2, -1, True, 1.0, "1", None, 2**64 - 1])) if odd_version else 1
    return pack([kind, version, *draw(near_record(cls))])


# valid messages and records, small enough that every prefix is cheap
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.one_of(st.floats(allow_nan=False, allow_infinity=False), int64)
valid_values = st.dictionaries(st.text(max_size=8), st.one_of(finite, st.text(max_size=8)), max_size=4)
valid_args = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
valid_stream = st.sampled_from(STREAMS)
valid_telemetry = st.builds(TelemetryRecord, int64, int64, st.text(max_size=8), valid_values)
valid_forward = st.builds(
    ForwardRecord, st.text(max_size=8), valid_stream, int64, int64, st.text(max_size=8), valid_values
)
valid_entries = st.lists(valid_forward.map(encode_record), max_size=3)
VALID_FIELD = {
    "str": st.text(max_size=8),
    "int": int64,
    "bytes": valid_entries.map(pack_entries),
    "list[bytes]": valid_entries,
    "list[str]": st.lists(st.text(max_size=8), max_size=4),
    "dict[str, float | str]": valid_values,
    "dict[str, str]": valid_args,
    "list[TelemetryRecord]": st.lists(valid_telemetry, max_size=3),
}
valid_messages = st.one_of(
    *[st.builds(cls, *[VALID_FIELD[f.type] for f in dataclasses.fields(cls)]) for cls in MESSAGE_CLASSES]
)


# -- tests -------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    check_decode(data)
    check_decode_record(data)


@FUZZ
@given(any_msgpack)
def test_arbitrary_msgpack(obj: object) -> None:
    data = pack(obj)
    check_decode(data)
    check_decode_record(data)


@settings(FUZZ, max_examples=300)
@given(st.lists(any_msgpack, max_size=7), st.sampled_from(sorted(MESSAGE_TYPES)))
def test_arbitrary_fields_after_a_valid_header(values: list, kind: int) -> None:
    check_decode(pack([kind, 1, *values]))


@settings(FUZZ, max_examples=800)
@given(near_frames())
def test_near_valid_frames(data: bytes) -> None:
    check_decode(data)


@settings(FUZZ, max_examples=300)
@given(near_record(ForwardRecord))
def test_near_valid_records(values: list) -> None:
    check_decode_record(pack(values))


@FUZZ
@given(valid_messages)
def test_valid_messages_round_trip(msg: Message) -> None:
    assert check_decode(encode(msg)) == msg


@settings(FUZZ, max_examples=300)
@given(valid_messages)
def test_every_prefix_of_a_valid_frame_is_refused(msg: Message) -> None:
    data = encode(msg)
    for end in range(len(data)):
        try:
            decode(data[:end])
        except ProtocolError:
            continue
        raise AssertionError(f"prefix of {end}/{len(data)} bytes of {msg!r} was accepted")


@settings(FUZZ, max_examples=300)
@given(valid_forward)
def test_every_prefix_of_a_valid_record_is_refused(rec: ForwardRecord) -> None:
    data = encode_record(rec)
    assert check_decode_record(data) == rec
    for end in range(len(data)):
        try:
            decode_record(data[:end])
        except ProtocolError:
            continue
        raise AssertionError(f"prefix of {end}/{len(data)} bytes of {rec!r} was accepted")


@settings(FUZZ, max_examples=20)
@given(
    st.sampled_from([b"\xc6", b"\xdb", b"\xdd", b"\xdf"]),  # bin32, str32, array32, map32 headers
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_oversized_frames(header: bytes, extra: int, declared: int) -> None:
    data = header + declared.to_bytes(4, "big") + bytes(MAX_FRAME - 5 + extra)
    assert len(data) > MAX_FRAME
    for decoder in (decode, decode_record):
        try:
            decoder(data)
        except ProtocolError as exc:
            assert f"exceeds the limit of {MAX_FRAME}" in str(exc)
        else:
            raise AssertionError("an oversized frame was accepted")


# -- unpack_entries (ForwardBatch.blob) ----------------------------------------------------


def test_every_annotation_has_a_fuzz_strategy() -> None:
    message_annotations = {f.type for cls in MESSAGE_CLASSES for f in dataclasses.fields(cls)}
    record_annotations = {f.type for cls in (TelemetryRecord, ForwardRecord) for f in dataclasses.fields(cls)}
    assert {"dict[str, float | str]", "dict[str, str]", "bytes"} <= message_annotations
    for annotation in message_annotations | record_annotations:
        assert isinstance(shaped(annotation), st.SearchStrategy)
    assert message_annotations <= set(VALID_FIELD)


@FUZZ
@given(st.one_of(st.binary(max_size=512), st.binary(max_size=64).map(lambda b: ZSTD_MAGIC + b)))
def test_unpack_entries_arbitrary_bytes(blob: bytes) -> None:
    check_unpack_entries(blob)


@FUZZ
@given(any_msgpack, st.booleans())
def test_unpack_entries_zstd_of_arbitrary_msgpack(obj: object, content_size: bool) -> None:
    check_unpack_entries(zstd(pack(obj), content_size))


@FUZZ
@given(st.lists(any_msgpack, max_size=6), st.booleans())
def test_unpack_entries_zstd_of_arbitrary_lists(items: list, content_size: bool) -> None:
    entries = check_unpack_entries(zstd(pack(items), content_size))
    if all(type(i) is bytes for i in items):
        assert entries == items


@FUZZ
@given(st.binary(max_size=64), st.booleans())
def test_unpack_entries_zstd_of_arbitrary_bytes(raw: bytes, content_size: bool) -> None:
    check_unpack_entries(zstd(raw, content_size))


@FUZZ
@given(valid_entries, st.data())
def test_unpack_entries_corrupted_blob(entries: list[bytes], data: st.DataObject) -> None:
    blob = bytearray(pack_entries(entries))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    check_unpack_entries(bytes(blob[:cut]) + data.draw(st.binary(max_size=8)))


@FUZZ
@given(st.integers(0, 2**64 - 1), st.integers(0, 255), st.binary(max_size=16))
def test_unpack_entries_forged_frame_headers(declared: int, descriptor: int, rest: bytes) -> None:
    # any frame header descriptor, with an 8-byte content size field that may declare anything
    check_unpack_entries(ZSTD_MAGIC + bytes([descriptor]) + declared.to_bytes(8, "little") + rest)


@FUZZ
@given(valid_entries)
def test_pack_unpack_round_trip(entries: list[bytes]) -> None:
    assert check_unpack_entries(pack_entries(entries)) == entries
    assert [decode_record(e) for e in unpack_entries(pack_entries(entries))] == [decode_record(e) for e in entries]

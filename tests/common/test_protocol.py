"""Unit tests of the wire codec: round trips, every validation failure, version negotiation.

Hostile frames are crafted with msgpack directly (tests may; production code goes through the codec).
"""

from __future__ import annotations

import dataclasses
import math

import msgpack
import pytest

from common.errors import ProtocolError, VersionMismatch
from common.protocol import codec
from common.protocol.codec import (
    MAX_FRAME,
    MAX_STR,
    SUPPORTED_VERSIONS,
    decode,
    decode_record,
    encode,
    encode_record,
    negotiate,
)
from common.protocol.messages import (
    MESSAGE_TYPES,
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    TelemetryAck,
    TelemetryBatch,
    TelemetryRecord,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

RECORD = ForwardRecord("dev-1", 7, 1_700_000_000_000, "env", {"temp_c": 21.5, "rh": 40})

SAMPLES: dict[type[Message], Message] = {
    Hello: Hello("dev-1", "device", "site-a", 1, 1),
    HelloAck: HelloAck("gw-1", 1, 5000),
    Heartbeat: Heartbeat(1_700_000_000_000),
    ErrorReply: ErrorReply("bad_message", "TelemetryBatch.records[0].seq: expected an integer, got str"),
    TelemetryBatch: TelemetryBatch(
        "dev-1",
        0,
        [
            TelemetryRecord(1, 1_700_000_000_000, "cpu", {"load": 0.25, "cores": 4}),
            TelemetryRecord(2, 1_700_000_001_000, "cpu", {}),
        ],
    ),
    TelemetryAck: TelemetryAck("dev-1", 2),
    ForwardBatch: ForwardBatch("gw-1", "site-a", 6, 7, 8, [encode_record(RECORD), encode_record(RECORD)]),
    ForwardAck: ForwardAck(8, 1, 1),
}


def fields_of(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def raw(msg: Message) -> list:
    """The msgpack array of an encoded message, for tampering."""
    return msgpack.unpackb(encode(msg), raw=False)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def with_field(msg: Message, name: str, value: object) -> bytes:
    """A frame of ``msg`` with one field replaced by an arbitrary (possibly invalid) value."""
    arr = raw(msg)
    arr[2 + [f.name for f in fields_of(type(msg))].index(name)] = value
    return pack(arr)


def all_fields() -> list[tuple[type[Message], dataclasses.Field]]:
    return [(cls, f) for cls in MESSAGE_TYPES.values() for f in fields_of(cls)]


def field_id(param: object) -> str:
    cls, f = param
    return f"{cls.__name__}.{f.name}"


# -- round trips -------------------------------------------------------------------------


def test_samples_cover_every_message_type() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES.values())
    assert all(MESSAGE_TYPES[cls.KIND] is cls for cls in SAMPLES)


@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
def test_round_trip_every_message_type(cls: type[Message]) -> None:
    msg = SAMPLES[cls]
    data = encode(msg)
    assert isinstance(data, bytes)
    back = decode(data)
    assert type(back) is cls
    assert back == msg


def test_frame_carries_kind_and_version_first() -> None:
    arr = raw(SAMPLES[Hello])
    assert arr[:2] == [Hello.KIND, codec.PROTOCOL_VERSION]
    assert len(arr) == 2 + len(fields_of(Hello))


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview])
def test_decode_accepts_any_bytes_like(make: type) -> None:
    assert decode(make(encode(SAMPLES[Heartbeat]))) == SAMPLES[Heartbeat]


def test_boundary_values_are_accepted() -> None:
    hello = Hello("n" * MAX_STR, "", "s" * MAX_STR, INT64_MIN, INT64_MAX)
    assert decode(encode(hello)) == hello
    batch = TelemetryBatch("d", 0, [TelemetryRecord(0, 0, "x", {f"m{i}": float(i) for i in range(codec.MAX_VALUES)})])
    assert decode(encode(batch)) == batch
    empty = ForwardBatch("gw", "site", 0, 1, 0, [])
    assert decode(encode(empty)) == empty


def test_record_round_trip() -> None:
    for rec in (RECORD, ForwardRecord("d", INT64_MAX, INT64_MIN, "s", {}), ForwardRecord("", 0, 0, "", {"x": -0.0})):
        assert decode_record(encode_record(rec)) == rec


def test_forward_batch_entries_decode_as_records() -> None:
    batch = decode(encode(SAMPLES[ForwardBatch]))
    assert [decode_record(e) for e in batch.entries] == [RECORD, RECORD]


# -- field validation: every field of every message --------------------------------------


@pytest.mark.parametrize("param", all_fields(), ids=field_id)
def test_wrong_type_names_message_and_field(param: tuple[type[Message], dataclasses.Field]) -> None:
    cls, f = param
    wrong = 1 if f.type == "str" else "not-the-right-type"
    with pytest.raises(ProtocolError, match=rf"^{cls.__name__}\.{f.name}: expected") as info:
        decode(with_field(SAMPLES[cls], f.name, wrong))
    assert info.value.kind == cls.__name__


@pytest.mark.parametrize("param", [p for p in all_fields() if p[1].type == "int"], ids=field_id)
@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_an_int(param: tuple[type[Message], dataclasses.Field], value: bool) -> None:
    cls, f = param
    with pytest.raises(ProtocolError, match=rf"^{cls.__name__}\.{f.name}: expected an integer, got bool"):
        decode(with_field(SAMPLES[cls], f.name, value))


@pytest.mark.parametrize("param", [p for p in all_fields() if p[1].type == "int"], ids=field_id)
def test_float_is_not_an_int(param: tuple[type[Message], dataclasses.Field]) -> None:
    cls, f = param
    with pytest.raises(ProtocolError, match=rf"^{cls.__name__}\.{f.name}: expected an integer, got float"):
        decode(with_field(SAMPLES[cls], f.name, 1.0))


@pytest.mark.parametrize("param", [p for p in all_fields() if p[1].type == "int"], ids=field_id)
def test_int_beyond_64_bits_is_rejected(param: tuple[type[Message], dataclasses.Field]) -> None:
    cls, f = param
    # msgpack can carry unsigned 64-bit integers; 2**63 .. 2**64-1 are out of the signed range
    for value in (INT64_MAX + 1, 2**64 - 1):
        with pytest.raises(ProtocolError, match=rf"^{cls.__name__}\.{f.name}: integer out of the 64-bit range"):
            decode(with_field(SAMPLES[cls], f.name, value))


@pytest.mark.parametrize("param", [p for p in all_fields() if p[1].type == "str"], ids=field_id)
def test_string_too_long(param: tuple[type[Message], dataclasses.Field]) -> None:
    cls, f = param
    with pytest.raises(ProtocolError, match=rf"^{cls.__name__}\.{f.name}: string of {MAX_STR + 1} characters exceeds"):
        decode(with_field(SAMPLES[cls], f.name, "x" * (MAX_STR + 1)))


@pytest.mark.parametrize("param", [p for p in all_fields() if p[1].type == "str"], ids=field_id)
def test_binary_is_not_a_string(param: tuple[type[Message], dataclasses.Field]) -> None:
    cls, f = param
    with pytest.raises(ProtocolError, match=rf"^{cls.__name__}\.{f.name}: expected a string, got bytes"):
        decode(with_field(SAMPLES[cls], f.name, b"dev-1"))


def test_string_entry_in_bytes_list() -> None:
    with pytest.raises(ProtocolError, match=r"^ForwardBatch\.entries\[1\]: expected bytes, got str"):
        decode(with_field(SAMPLES[ForwardBatch], "entries", [b"ok", "not-bytes"]))


def _batch_with_record(record: list) -> bytes:
    return with_field(SAMPLES[TelemetryBatch], "records", [[1, 2, "cpu", {}], record])


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ([1, 2, "cpu"], r"TelemetryBatch\.records\[1\]: TelemetryRecord must be an array of 4 fields"),
        ([1, 2, "cpu", {}, 5], r"TelemetryBatch\.records\[1\]: TelemetryRecord must be an array of 4 fields"),
        ({"seq": 1}, r"TelemetryBatch\.records\[1\]: TelemetryRecord must be an array of 4 fields"),
        (["1", 2, "cpu", {}], r"TelemetryBatch\.records\[1\]\.seq: expected an integer, got str"),
        ([1, True, "cpu", {}], r"TelemetryBatch\.records\[1\]\.ts_ms: expected an integer, got bool"),
        ([1, 2, "c" * (MAX_STR + 1), {}], r"TelemetryBatch\.records\[1\]\.stream: string of"),
        ([1, 2, "cpu", [1.0]], r"TelemetryBatch\.records\[1\]\.values: expected a map of metrics, got list"),
        ([1, 2, "cpu", {"ok": "1.0"}], r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number, got str"),
        ([1, 2, "cpu", {"ok": True}], r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number, got bool"),
        ([1, 2, "cpu", {"ok": None}], r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number, got NoneType"),
        ([1, 2, "cpu", {b"k": 1.0}], r"TelemetryBatch\.records\[1\]\.values\[key\]: expected a string, got bytes"),
        ([1, 2, "cpu", {"k" * (MAX_STR + 1): 1.0}], r"TelemetryBatch\.records\[1\]\.values\[key\]: string of"),
        (
            [1, 2, "cpu", {f"m{i}": 1.0 for i in range(codec.MAX_VALUES + 1)}],
            rf"TelemetryBatch\.records\[1\]\.values: {codec.MAX_VALUES + 1} metrics exceed {codec.MAX_VALUES}",
        ),
    ],
    ids=lambda v: None if isinstance(v, str) else "",
)
def test_nested_record_failures_name_the_path(record: list, match: str) -> None:
    with pytest.raises(ProtocolError, match="^" + match) as info:
        decode(_batch_with_record(record))
    assert info.value.kind == "TelemetryBatch"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_is_rejected(value: float) -> None:
    with pytest.raises(ProtocolError, match=r"^TelemetryBatch\.records\[0\]\.values\['x'\]: number is not finite"):
        decode(with_field(SAMPLES[TelemetryBatch], "records", [[1, 2, "cpu", {"x": value}]]))
    with pytest.raises(ProtocolError, match=r"^ForwardRecord\.values\['x'\]: number is not finite"):
        decode_record(pack(["d", 1, 2, "s", {"x": value}]))


@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
@pytest.mark.parametrize("delta", [-1, +1])
def test_wrong_field_count(cls: type[Message], delta: int) -> None:
    arr = raw(SAMPLES[cls])
    arr = arr[:-1] if delta < 0 else [*arr, 0]
    n = len(fields_of(cls))
    with pytest.raises(ProtocolError, match=rf"^{cls.__name__}: expected {n} fields, got {n + delta}") as info:
        decode(pack(arr))
    assert info.value.kind == cls.__name__
    assert not isinstance(info.value, VersionMismatch)


# -- frame-level failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "shown"),
    [(0, "0"), (99, "99"), (-1, "-1"), (2**64 - 1, str(2**64 - 1)), ("1", "of type str"), (True, "of type bool"),
     (1.0, "of type float"), (None, "of type NoneType"), ([1], "of type list")],
)
def test_unknown_kind(kind: object, shown: str) -> None:
    arr = raw(SAMPLES[Hello])
    arr[0] = kind
    with pytest.raises(ProtocolError, match=rf"^frame: unknown message kind {shown}$") as info:
        decode(pack(arr))
    assert not isinstance(info.value, VersionMismatch)


@pytest.mark.parametrize("cls", list(MESSAGE_TYPES.values()), ids=lambda c: c.__name__)
@pytest.mark.parametrize("version", [0, SUPPORTED_VERSIONS[1] + 1, -1, "1", True, 1.0, None])
def test_unsupported_version(cls: type[Message], version: object) -> None:
    arr = raw(SAMPLES[cls])
    arr[1] = version
    with pytest.raises(VersionMismatch, match=rf"^{cls.__name__}: protocol version .* is not supported") as info:
        decode(pack(arr))
    assert isinstance(info.value, ProtocolError)
    assert info.value.kind == cls.__name__


def test_encode_at_another_version_is_refused_by_this_side() -> None:
    match = r"^Heartbeat: protocol version 2 is not supported \(this side speaks 1\.\.1\)"
    with pytest.raises(VersionMismatch, match=match):
        decode(encode(SAMPLES[Heartbeat], version=2))


def test_deeply_nested_kind_or_version_is_a_protocol_error() -> None:
    # regression: the error message used repr(), which raised RecursionError near msgpack's nesting limit
    nested: object = 0
    for _ in range(1000):
        nested = [nested]
    with pytest.raises(ProtocolError, match=r"^frame: unknown message kind of type list$"):
        decode(pack([nested, 1]))
    with pytest.raises(VersionMismatch, match=r"^Hello: protocol version of type list is not supported"):
        decode(pack([1, nested]))


def test_huge_kind_is_not_echoed_into_the_message() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(pack(["k" * 100_000, 1]))
    assert len(str(info.value)) < 200


def test_empty_frame() -> None:
    with pytest.raises(ProtocolError, match=r"^frame: empty frame$"):
        decode(b"")
    with pytest.raises(ProtocolError, match=r"^ForwardRecord: empty frame$"):
        decode_record(b"")


def test_frame_over_max_frame_is_refused_before_parsing() -> None:
    size = MAX_FRAME + 1
    data = b"\xc6" + (size - 5).to_bytes(4, "big") + bytes(size - 5)  # a valid bin32, one byte too many
    assert len(data) == size
    with pytest.raises(ProtocolError, match=rf"^frame: frame of {size} bytes exceeds the limit of {MAX_FRAME}$"):
        decode(data)
    with pytest.raises(ProtocolError, match=r"^ForwardRecord: frame of"):
        decode_record(data)


def test_frame_of_exactly_max_frame_is_parsed() -> None:
    data = b"\xc6" + (MAX_FRAME - 5).to_bytes(4, "big") + bytes(MAX_FRAME - 5)
    with pytest.raises(ProtocolError, match=r"^frame: expected an array"):
        decode(data)


@pytest.mark.parametrize("data", ["text", 42, None, [1, 1, 1]], ids=repr)
def test_not_bytes(data: object) -> None:
    with pytest.raises(ProtocolError, match=rf"^frame: expected bytes, got {type(data).__name__}$"):
        decode(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # the one byte msgpack never uses
        b"\x93\x01",  # array of 3, truncated
        encode(Heartbeat(1)) + b"\x00",  # trailing data
        b"\xdd\xff\xff\xff\xff",  # array header of 4 G entries
        b"\xdf\x00\x01\x00\x00",  # map header past MAX_ITEMS
    ],
    ids=["reserved", "truncated", "trailing", "huge-array", "huge-map"],
)
def test_not_valid_msgpack(data: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"^frame: not valid msgpack"):
        decode(data)


@pytest.mark.parametrize("obj", [{"kind": 1}, 1, "hello", b"\x01", [], [1]], ids=repr)
def test_not_an_array_of_kind_and_version(obj: object) -> None:
    with pytest.raises(ProtocolError, match=r"^frame: expected an array \[kind, version, \.\.\.fields\]$"):
        decode(pack(obj))


@pytest.mark.parametrize(
    "value",
    [msgpack.ExtType(5, b"abc"), msgpack.ExtType(0, b"\x00" * 16), msgpack.Timestamp(0, 1)],
    ids=["ext", "ext16", "timestamp"],
)
def test_ext_types_are_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match=r"^frame: not valid msgpack .*exceeds max_ext_len"):
        decode(with_field(SAMPLES[Hello], "node_id", value))


def test_empty_ext_type_fails_the_field_check() -> None:
    # an ext of length 0 passes max_ext_len=0; it must still never stand in for a field
    with pytest.raises(ProtocolError, match=r"^Hello\.node_id: expected a string, got ExtType"):
        decode(with_field(SAMPLES[Hello], "node_id", msgpack.ExtType(5, b"")))


@pytest.mark.parametrize("key", [1, -1, 1.5, True, None], ids=repr)
def test_map_with_non_str_keys(key: object) -> None:
    # the unpacker refuses such keys outright (strict_map_key); bytes keys reach the field check
    with pytest.raises(ProtocolError, match=r"^frame: not valid msgpack .*map key"):
        decode(with_field(SAMPLES[TelemetryBatch], "records", [[1, 2, "cpu", {key: 1.0}]]))


def test_map_with_bytes_key_names_the_field() -> None:
    with pytest.raises(ProtocolError, match=r"^ForwardRecord\.values\[key\]: expected a string, got bytes"):
        decode_record(pack(["d", 1, 2, "s", {b"k": 1.0}]))


def test_protocol_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b"\xc1")


# -- decode_record -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (["d", 1, 2, "s"], r"^ForwardRecord: ForwardRecord must be an array of 5 fields$"),
        (["d", 1, 2, "s", {}, 0], r"^ForwardRecord: ForwardRecord must be an array of 5 fields$"),
        ({"device_id": "d"}, r"^ForwardRecord: ForwardRecord must be an array of 5 fields$"),
        ([1, 1, 2, "s", {}], r"^ForwardRecord\.device_id: expected a string, got int"),
        (["d", "1", 2, "s", {}], r"^ForwardRecord\.seq: expected an integer, got str"),
        (["d", 1, False, "s", {}], r"^ForwardRecord\.ts_ms: expected an integer, got bool"),
        (["d", 2**63, 2, "s", {}], r"^ForwardRecord\.seq: integer out of the 64-bit range"),
        (["d", 1, 2, "s" * (MAX_STR + 1), {}], r"^ForwardRecord\.stream: string of"),
        (["d", 1, 2, "s", {"x": False}], r"^ForwardRecord\.values\['x'\]: expected a number, got bool"),
    ],
    ids=lambda v: None if isinstance(v, str) else "",
)
def test_decode_record_failures(obj: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_record(pack(obj))


def test_a_message_is_not_a_record() -> None:
    with pytest.raises(ProtocolError, match=r"^ForwardRecord"):
        decode_record(encode(SAMPLES[ForwardAck]))


# -- negotiation -------------------------------------------------------------------------


def test_negotiate_with_this_build() -> None:
    lo, hi = SUPPORTED_VERSIONS
    assert negotiate(lo, hi) == hi
    assert negotiate(0, hi + 5) == hi
    assert negotiate(hi, hi) == hi


@pytest.mark.parametrize(
    ("peer", "expected"),
    [((1, 1), 1), ((1, 9), 3), ((2, 2), 2), ((0, 2), 2), ((3, 7), 3), ((2, 3), 3)],
)
def test_negotiate_picks_the_highest_common_version(
    monkeypatch: pytest.MonkeyPatch, peer: tuple[int, int], expected: int
) -> None:
    monkeypatch.setattr(codec, "SUPPORTED_VERSIONS", (1, 3))
    assert negotiate(*peer) == expected


@pytest.mark.parametrize("peer", [(4, 9), (0, 0), (-3, 0), (3, 2), (2, 1)])
def test_negotiate_disjoint_raises(monkeypatch: pytest.MonkeyPatch, peer: tuple[int, int]) -> None:
    monkeypatch.setattr(codec, "SUPPORTED_VERSIONS", (1, 2))
    with pytest.raises(VersionMismatch, match=rf"^Hello: peer speaks {peer[0]}\.\.{peer[1]}, this side 1\.\.2$"):
        negotiate(*peer)


def test_codec_all_names_exist() -> None:
    assert all(hasattr(codec, name) for name in codec.__all__)

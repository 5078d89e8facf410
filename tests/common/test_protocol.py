"""Unit tests of the wire codec: round trips, every validation failure, version negotiation.

Hostile frames are crafted with msgpack directly (tests may; production code goes through the codec).
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import msgpack
import pytest
import zstandard

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
    pack_entries,
    unpack_entries,
)
from common.protocol.messages import (
    ChunkData,
    ChunkRequest,
    FirmwareOffer,
    OfferRequest,
    MESSAGE_TYPES,
    EnrollReply,
    EnrollRequest,
    KeyRotation,
    NodeCertificate,
    RevocationUpdate,
    DdiCredentials,
    SitePlanEnvelope,
    STREAMS,
    Command,
    CommandAck,
    ErrorReply,
    ForwardAck,
    ForwardBatch,
    ForwardRecord,
    GatewayStatus,
    Heartbeat,
    Hello,
    HelloAck,
    Message,
    TelemetryAck,
    TelemetryBatch,
    TelemetryRecord,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

RECORD = ForwardRecord("dev-1", "bulk", 7, 1_700_000_000_000, "metrics", {"temp_c": 21.5, "rh": 40})
ALERT = ForwardRecord("dev-1", "critical", 3, 1_700_000_000_500, "alert", {"rule": "disk_full", "used_pct": 97.5})
BLOB = pack_entries([encode_record(RECORD), encode_record(RECORD)])

SAMPLES: dict[type[Message], Message] = {
    Hello: Hello("dev-1", "device", "site-a", 1, 1),
    HelloAck: HelloAck("gw-1", 1, 5000, 256),
    Heartbeat: Heartbeat(1_700_000_000_000),
    ErrorReply: ErrorReply("bad_message", "TelemetryBatch.records[0].seq: expected an integer, got str"),
    TelemetryBatch: TelemetryBatch(
        "dev-1",
        "bulk",
        0,
        [
            TelemetryRecord(1, 1_700_000_000_000, "metrics", {"load": 0.25, "cores": 4}),
            TelemetryRecord(2, 1_700_000_001_000, "status", {"state": "online", "fw": "1.4.2"}),
            TelemetryRecord(3, 1_700_000_002_000, "metrics", {}),
        ],
    ),
    TelemetryAck: TelemetryAck("dev-1", "bulk", 2, 64),
    ForwardBatch: ForwardBatch("gw-1", "site-a", "bulk", 6, 7, 8, BLOB),
    ForwardAck: ForwardAck("bulk", 8, 1, 1),
    GatewayStatus: GatewayStatus(
        "gw-1", 1_700_000_003_000, {"backlog.bulk": 120, "oldest_age_ms": 4500.0, "link": "up"}
    ),
    Command: Command("dev-1", 4, "reboot", {"delay_s": "5", "reason": "update"}, 1_700_000_060_000),
    CommandAck: CommandAck("dev-1", 4, "failed", "reboot refused: update in progress"),
    OfferRequest: OfferRequest(7, "2.1.0", "sim-board-1", ["2.0.0", "1.9.3"]),
    FirmwareOffer: FirmwareOffer(7, "2.1.0", b'{"body":"..."}', "delta", "ab" * 32, "2.0.0", "bsdiff4", 9000, 65536, ["cd" * 32], ""),
    ChunkRequest: ChunkRequest("ab" * 32, 3, 65536),
    ChunkData: ChunkData("ab" * 32, 3, b"\x00" * 100, ""),
    EnrollRequest: EnrollRequest("dev-1", "k" * 40, "sim-board-1", "SN-0001", "ect_00ff_secret"),
    EnrollReply: EnrollReply("dev-1", "k" * 40, "accept", "enrolled at site 'site-1'", b"-----BEGIN CERTIFICATE-----"),
    RevocationUpdate: RevocationUpdate(b'{"signed": {}, "sig": ""}'),
    DdiCredentials: DdiCredentials("site-1", 3, ["ddi-1"], ["ab" * 32], ["ddi-board"]),
    KeyRotation: KeyRotation("dev-1", "n" * 40),
    NodeCertificate: NodeCertificate(b"-----BEGIN CERTIFICATE-----"),
    SitePlanEnvelope: SitePlanEnvelope("r1", b'{"signed": {}, "sig": ""}'),
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


def test_samples_use_known_streams() -> None:
    for msg in SAMPLES.values():
        if hasattr(msg, "stream"):
            assert msg.stream in STREAMS


def test_boundary_values_are_accepted() -> None:
    hello = Hello("n" * MAX_STR, "", "s" * MAX_STR, INT64_MIN, INT64_MAX)
    assert decode(encode(hello)) == hello
    full = {f"m{i}": float(i) if i % 2 else "v" * MAX_STR for i in range(codec.MAX_VALUES)}
    batch = TelemetryBatch("d", "state", 0, [TelemetryRecord(0, 0, "x", full)])
    assert decode(encode(batch)) == batch
    status = GatewayStatus("gw", INT64_MAX, {"min": INT64_MIN, "max": INT64_MAX, "s": "", "f": -0.0})
    assert decode(encode(status)) == status
    cmd = Command("d", INT64_MAX, "n" * MAX_STR, {f"a{i}": "v" * MAX_STR for i in range(codec.MAX_VALUES)}, 0)
    assert decode(encode(cmd)) == cmd
    assert decode(encode(Command("d", 0, "noop", {}, INT64_MIN))) == Command("d", 0, "noop", {}, INT64_MIN)
    empty = ForwardBatch("gw", "site", "critical", 0, 1, 0, pack_entries([]))
    assert decode(encode(empty)) == empty
    assert decode(encode(ForwardBatch("gw", "site", "bulk", 0, 1, 0, b""))).blob == b""


def test_record_round_trip() -> None:
    for rec in (
        RECORD,
        ALERT,
        ForwardRecord("d", "state", INT64_MAX, INT64_MIN, "s", {}),
        ForwardRecord("", "", 0, 0, "", {"x": -0.0, "y": "", "z": "z" * MAX_STR, "i": INT64_MIN}),
    ):
        assert decode_record(encode_record(rec)) == rec


def test_forward_batch_blob_unpacks_to_records() -> None:
    batch = decode(encode(SAMPLES[ForwardBatch]))
    assert isinstance(batch, ForwardBatch)
    assert [decode_record(e) for e in unpack_entries(batch.blob)] == [RECORD, RECORD]


# -- string values in records ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "online", "é✓🚀", "x" * MAX_STR], ids=["empty", "word", "unicode", "max"])
def test_string_values_are_accepted(value: str) -> None:
    rec = TelemetryRecord(1, 2, "status", {"state": value, "n": 1.5})
    batch = TelemetryBatch("d", "state", 0, [rec])
    assert decode(encode(batch)) == batch
    fwd = ForwardRecord("d", "state", 1, 2, "status", {"state": value})
    assert decode_record(encode_record(fwd)) == fwd
    status = GatewayStatus("gw", 1, {"link": value})
    assert decode(encode(status)) == status


def test_over_long_string_values_are_refused() -> None:
    long = "x" * (MAX_STR + 1)
    match = rf"string of {MAX_STR + 1} characters exceeds {MAX_STR}"
    with pytest.raises(ProtocolError, match=r"^TelemetryBatch\.records\[0\]\.values\['s'\]: " + match):
        decode(encode(TelemetryBatch("d", "state", 0, [TelemetryRecord(1, 2, "status", {"s": long})])))
    with pytest.raises(ProtocolError, match=r"^ForwardRecord\.values\['s'\]: " + match):
        decode_record(encode_record(ForwardRecord("d", "state", 1, 2, "status", {"s": long})))
    with pytest.raises(ProtocolError, match=r"^GatewayStatus\.values\['s'\]: " + match):
        decode(encode(GatewayStatus("gw", 1, {"s": long})))


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
        ([1, 2, "c" * (MAX_STR + 1), {}], r"TelemetryBatch\.records\[1\]\.kind: string of"),
        ([1, 2, None, {}], r"TelemetryBatch\.records\[1\]\.kind: expected a string, got NoneType"),
        ([1, 2, "cpu", [1.0]], r"TelemetryBatch\.records\[1\]\.values: expected a map of values, got list"),
        (
            [1, 2, "cpu", {"ok": True}],
            r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number or a string, got bool",
        ),
        (
            [1, 2, "cpu", {"ok": None}],
            r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number or a string, got NoneType",
        ),
        (
            [1, 2, "cpu", {"ok": b"1.0"}],
            r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number or a string, got bytes",
        ),
        (
            [1, 2, "cpu", {"ok": [1.0]}],
            r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number or a string, got list",
        ),
        (
            [1, 2, "cpu", {"ok": {"a": 1.0}}],
            r"TelemetryBatch\.records\[1\]\.values\['ok'\]: expected a number or a string, got dict",
        ),
        ([1, 2, "cpu", {"ok": 2**63}], r"TelemetryBatch\.records\[1\]\.values\['ok'\]: integer out of the 64-bit"),
        ([1, 2, "cpu", {"ok": "v" * (MAX_STR + 1)}], r"TelemetryBatch\.records\[1\]\.values\['ok'\]: string of"),
        ([1, 2, "cpu", {b"k": 1.0}], r"TelemetryBatch\.records\[1\]\.values\[key\]: expected a string, got bytes"),
        ([1, 2, "cpu", {"k" * (MAX_STR + 1): 1.0}], r"TelemetryBatch\.records\[1\]\.values\[key\]: string of"),
        (
            [1, 2, "cpu", {f"m{i}": 1.0 for i in range(codec.MAX_VALUES + 1)}],
            rf"TelemetryBatch\.records\[1\]\.values: {codec.MAX_VALUES + 1} values exceed {codec.MAX_VALUES}",
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
        decode_record(pack(["d", "bulk", 1, 2, "s", {"x": value}]))
    with pytest.raises(ProtocolError, match=r"^GatewayStatus\.values\['x'\]: number is not finite"):
        decode(with_field(SAMPLES[GatewayStatus], "values", {"x": value}))


# -- GatewayStatus.values and Command.args -------------------------------------------------


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([1.0], r"values: expected a map of values, got list"),
        ({"ok": True}, r"values\['ok'\]: expected a number or a string, got bool"),
        ({"ok": None}, r"values\['ok'\]: expected a number or a string, got NoneType"),
        ({"ok": 2**64 - 1}, r"values\['ok'\]: integer out of the 64-bit range"),
        ({b"k": 1.0}, r"values\[key\]: expected a string, got bytes"),
        ({f"m{i}": 1 for i in range(codec.MAX_VALUES + 1)}, rf"values: {codec.MAX_VALUES + 1} values exceed"),
    ],
    ids=lambda v: None if isinstance(v, str) else "",
)
def test_gateway_status_values_are_checked(values: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=r"^GatewayStatus\." + match) as info:
        decode(with_field(SAMPLES[GatewayStatus], "values", values))
    assert info.value.kind == "GatewayStatus"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["5"], r"args: expected a map of strings, got list"),
        ({"delay_s": 5}, r"args\['delay_s'\]: expected a string, got int"),
        ({"delay_s": 5.0}, r"args\['delay_s'\]: expected a string, got float"),
        ({"force": True}, r"args\['force'\]: expected a string, got bool"),
        ({"x": None}, r"args\['x'\]: expected a string, got NoneType"),
        ({"x": b"5"}, r"args\['x'\]: expected a string, got bytes"),
        ({"x": ["a"]}, r"args\['x'\]: expected a string, got list"),
        ({"x": {"a": "b"}}, r"args\['x'\]: expected a string, got dict"),
        ({"x": "v" * (MAX_STR + 1)}, rf"args\['x'\]: string of {MAX_STR + 1} characters exceeds"),
        ({b"k": "v"}, r"args\[key\]: expected a string, got bytes"),
        ({"k" * (MAX_STR + 1): "v"}, r"args\[key\]: string of"),
        ({f"a{i}": "v" for i in range(codec.MAX_VALUES + 1)}, rf"args: {codec.MAX_VALUES + 1} entries exceed"),
    ],
    ids=lambda v: None if isinstance(v, str) else "",
)
def test_command_args_must_be_strings(args: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=r"^Command\." + match) as info:
        decode(with_field(SAMPLES[Command], "args", args))
    assert info.value.kind == "Command"


def test_command_args_refused_at_encode_time_are_still_refused_by_the_decoder() -> None:
    # the dataclass does not validate; a sender that puts a number in args is caught by the receiver
    with pytest.raises(ProtocolError, match=r"^Command\.args\['n'\]: expected a string, got int"):
        decode(encode(Command("d", 1, "set", {"n": 5}, 0)))  # type: ignore[dict-item]


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
    with pytest.raises(ProtocolError, match=r"^frame: not valid msgpack .*map key"):
        decode(with_field(SAMPLES[Command], "args", {key: "v"}))


def test_map_with_bytes_key_names_the_field() -> None:
    with pytest.raises(ProtocolError, match=r"^ForwardRecord\.values\[key\]: expected a string, got bytes"):
        decode_record(pack(["d", "bulk", 1, 2, "s", {b"k": 1.0}]))


def test_protocol_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b"\xc1")


# -- decode_record -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        (["d", "bulk", 1, 2, "s"], r"^ForwardRecord: ForwardRecord must be an array of 6 fields$"),
        (["d", "bulk", 1, 2, "s", {}, 0], r"^ForwardRecord: ForwardRecord must be an array of 6 fields$"),
        (["d", 1, 2, "s", {}], r"^ForwardRecord: ForwardRecord must be an array of 6 fields$"),  # the old shape
        ({"device_id": "d"}, r"^ForwardRecord: ForwardRecord must be an array of 6 fields$"),
        ([1, "bulk", 1, 2, "s", {}], r"^ForwardRecord\.device_id: expected a string, got int"),
        (["d", 1, 1, 2, "s", {}], r"^ForwardRecord\.stream: expected a string, got int"),
        (["d", "b" * (MAX_STR + 1), 1, 2, "s", {}], r"^ForwardRecord\.stream: string of"),
        (["d", "bulk", "1", 2, "s", {}], r"^ForwardRecord\.seq: expected an integer, got str"),
        (["d", "bulk", 1, False, "s", {}], r"^ForwardRecord\.ts_ms: expected an integer, got bool"),
        (["d", "bulk", 2**63, 2, "s", {}], r"^ForwardRecord\.seq: integer out of the 64-bit range"),
        (["d", "bulk", 1, 2, "s" * (MAX_STR + 1), {}], r"^ForwardRecord\.kind: string of"),
        (["d", "bulk", 1, 2, "s", {"x": False}], r"^ForwardRecord\.values\['x'\]: expected a number or a string"),
        (["d", "bulk", 1, 2, "s", {"x": "v" * (MAX_STR + 1)}], r"^ForwardRecord\.values\['x'\]: string of"),
    ],
    ids=lambda v: None if isinstance(v, str) else "",
)
def test_decode_record_failures(obj: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_record(pack(obj))


def test_a_message_is_not_a_record() -> None:
    with pytest.raises(ProtocolError, match=r"^ForwardRecord"):
        decode_record(encode(SAMPLES[ForwardAck]))


# -- pack_entries / unpack_entries (ForwardBatch.blob) ----------------------------------------

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd(raw: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=content_size).compress(raw)


def forged_frame(declared: int) -> bytes:
    """A tiny zstd frame whose header declares ``declared`` bytes of content (and holds one empty raw block)."""
    header = bytes([0xE0]) + declared.to_bytes(8, "little")  # single segment, 8-byte content size
    return ZSTD_MAGIC + header + b"\x01\x00\x00"


@pytest.mark.parametrize(
    "entries",
    [[], [b""], [encode_record(RECORD)], [encode_record(RECORD), encode_record(ALERT)] * 50, [bytes(range(256))] * 3],
    ids=["empty", "one-empty", "one", "many", "binary"],
)
def test_pack_unpack_round_trip(entries: list[bytes]) -> None:
    blob = pack_entries(entries)
    assert isinstance(blob, bytes)
    assert blob.startswith(ZSTD_MAGIC)
    assert unpack_entries(blob) == entries
    for make in (bytearray, memoryview):
        assert unpack_entries(make(blob)) == entries  # type: ignore[arg-type]


@pytest.mark.parametrize("level", [1, 3, 19])
def test_pack_levels_all_unpack(level: int) -> None:
    entries = [encode_record(RECORD)] * 20
    assert unpack_entries(pack_entries(entries, level=level)) == entries


def test_pack_compresses_repetitive_entries() -> None:
    entries = [encode_record(RECORD)] * 200
    assert len(pack_entries(entries)) < sum(map(len, entries)) // 10


def test_unpack_entries_accepts_a_frame_without_content_size() -> None:
    entries = [encode_record(RECORD), encode_record(ALERT)]
    assert unpack_entries(zstd(pack(entries), content_size=False)) == entries


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x00",
        b"hello, not zstd",
        pack([b"a", b"b"]),  # plain msgpack, never compressed
        ZSTD_MAGIC,  # magic and nothing else
        ZSTD_MAGIC + b"\xff" * 16,
        b"\x00" + BLOB[1:],  # bad magic
        BLOB[:-1],  # truncated
        BLOB[:-3] + bytes(b ^ 0xFF for b in BLOB[-3:]),  # corrupted block
        zlib.compress(pack([b"a"])),  # another compressor
        bytes(range(256)) * 4,
    ],
    ids=["empty", "zero", "text", "msgpack", "magic-only", "magic-junk", "bad-magic", "truncated", "corrupt",
         "zlib", "ramp"],
)
def test_unpack_entries_refuses_garbage(blob: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"^ForwardBatch\.blob: "):
        unpack_entries(blob)


def test_every_prefix_of_a_blob_is_refused() -> None:
    for end in range(len(BLOB)):
        with pytest.raises(ProtocolError, match=r"^ForwardBatch\.blob: "):
            unpack_entries(BLOB[:end])


@pytest.mark.parametrize("blob", ["text", None, 42, [b"a"]], ids=repr)
def test_unpack_entries_not_bytes(blob: object) -> None:
    with pytest.raises(ProtocolError, match=rf"^ForwardBatch\.blob: expected bytes, got {type(blob).__name__}$"):
        unpack_entries(blob)  # type: ignore[arg-type]


def _bomb_payload(limit: int) -> bytes:
    """A msgpack list of one zero-filled bin that is exactly ``limit`` bytes long."""
    n = limit - len(pack([b""]))
    while len(pack([bytes(n)])) > limit:
        n -= 1
    raw = pack([bytes(n)])
    assert len(raw) == limit
    return raw


@pytest.mark.parametrize("content_size", [True, False], ids=["declared", "undeclared"])
def test_unpack_entries_refuses_a_zip_bomb(monkeypatch: pytest.MonkeyPatch, content_size: bool) -> None:
    limit = 1 << 20
    monkeypatch.setattr(codec, "MAX_BLOB_BYTES", limit)
    payload = _bomb_payload(limit)
    at_limit = zstd(payload, content_size=content_size)
    past_limit = zstd(_bomb_payload(limit + 1), content_size=content_size)
    huge = zstd(pack([bytes(16 * limit)]), content_size=content_size)
    assert len(past_limit) < 1024 and len(huge) < 4096  # highly compressible
    assert pack(unpack_entries(at_limit)) == payload  # exactly at the limit is fine
    for blob in (past_limit, huge):
        match = r"^ForwardBatch\.blob: inflates past" if content_size else r"^ForwardBatch\.blob: "
        with pytest.raises(ProtocolError, match=match):
            unpack_entries(blob)


@pytest.mark.parametrize("declared", [codec.MAX_BLOB_BYTES + 1, 10**9, 2**40, 2**62], ids=str)
def test_unpack_entries_trusts_no_declared_content_size(declared: int) -> None:
    # regression: zstandard allocates the size a frame header declares, whatever max_output_size says;
    # a 16-byte blob declaring 1 TiB raised MemoryError instead of ProtocolError
    with pytest.raises(ProtocolError, match=rf"^ForwardBatch\.blob: inflates past {codec.MAX_BLOB_BYTES} bytes$"):
        unpack_entries(forged_frame(declared))


def test_unpack_entries_declared_size_that_lies_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"^ForwardBatch\.blob: not a valid zstd frame"):
        unpack_entries(forged_frame(1000))


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"entries": [b"a"]}, r"^ForwardBatch\.blob: expected a list, got dict$"),
        (b"abc", r"^ForwardBatch\.blob: expected a list, got bytes$"),
        ("abc", r"^ForwardBatch\.blob: expected a list, got str$"),
        (7, r"^ForwardBatch\.blob: expected a list, got int$"),
        (None, r"^ForwardBatch\.blob: expected a list, got NoneType$"),
        ([b"ok", "not-bytes"], r"^ForwardBatch\.blob\[1\]: expected bytes, got str$"),
        ([b"ok", 1], r"^ForwardBatch\.blob\[1\]: expected bytes, got int$"),
        ([[b"nested"]], r"^ForwardBatch\.blob\[0\]: expected bytes, got list$"),
        ([msgpack.ExtType(0, b"")], r"^ForwardBatch\.blob\[0\]: expected bytes, got ExtType$"),
    ],
    ids=lambda v: None if isinstance(v, str) else "",
)
def test_unpack_entries_refuses_a_frame_of_a_non_list(obj: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        unpack_entries(zstd(pack(obj)))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", r"^ForwardBatch\.blob: empty frame$"),
        (b"\xc1", r"^ForwardBatch\.blob: not valid msgpack"),
        (pack([b"a"]) + b"\x00", r"^ForwardBatch\.blob: not valid msgpack"),  # trailing data
        (b"\xdd\xff\xff\xff\xff", r"^ForwardBatch\.blob: not valid msgpack"),  # array header of 4 G entries
        (pack([msgpack.ExtType(5, b"abc")]), r"^ForwardBatch\.blob: not valid msgpack .*exceeds max_ext_len"),
    ],
    ids=["empty", "reserved", "trailing", "huge-array", "ext"],
)
def test_unpack_entries_refuses_bad_msgpack_inside(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        unpack_entries(zstd(raw))


def test_unpack_entries_checks_shape_not_records() -> None:
    # entries are opaque bytes to unpack_entries; each is checked by decode_record
    entries = unpack_entries(pack_entries([b"\xc1", encode_record(RECORD)]))
    with pytest.raises(ProtocolError, match=r"^ForwardRecord: not valid msgpack"):
        decode_record(entries[0])
    assert decode_record(entries[1]) == RECORD


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

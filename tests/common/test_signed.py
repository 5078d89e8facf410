"""Signed envelopes: what a gateway in the middle can and cannot do with them."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import common.signed
from common.errors import ExpiredError, MisdirectedError, ReplayError, SignatureError, TrustError
from common.signed import DOMAIN, Envelope, EnvelopeVerifier, canonical_json, key_id_for, sign_envelope

CLOUD = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
CLOUD_ID = key_id_for(CLOUD.public_key())
T0 = 1_900_000_000_000
HOUR = 3_600_000


def sign(
    seq: int = 1,
    *,
    kind: str = "command",
    audience: str = "device:d1",
    body: dict | None = None,
    issued_ms: int = T0,
    ttl_ms: int = HOUR,
    key: Ed25519PrivateKey = CLOUD,
    key_id: str = CLOUD_ID,
) -> bytes:
    return sign_envelope(
        kind,
        {"op": "reboot"} if body is None else body,
        seq=seq,
        issued_ms=issued_ms,
        expires_ms=issued_ms + ttl_ms,
        audience=audience,
        key=key,
        key_id=key_id,
    )


def device() -> EnvelopeVerifier:
    return EnvelopeVerifier({CLOUD_ID: CLOUD.public_key()})


def edit(blob: bytes, **changes: object) -> bytes:
    """What a gateway can do: rewrite the signed fields, keeping the signature."""
    outer = json.loads(blob)
    outer["signed"].update(changes)
    return canonical_json(outer)


def test_all() -> None:
    assert sorted(common.signed.__all__) == [
        "DOMAIN",
        "ENVELOPE_VERSION",
        "Envelope",
        "EnvelopeVerifier",
        "canonical_json",
        "key_id_for",
        "sign_envelope",
    ]


def test_a_signed_envelope_verifies_and_carries_everything() -> None:
    blob = sign(7, body={"op": "set", "values": {"b": 2, "a": [1, "x", None, True]}})
    env = device().verify(blob, kind="command", audience="device:d1", now_ms=T0 + 1)
    assert env == Envelope(
        kind="command",
        audience="device:d1",
        seq=7,
        issued_ms=T0,
        expires_ms=T0 + HOUR,
        key_id=CLOUD_ID,
        body={"op": "set", "values": {"b": 2, "a": [1, "x", None, True]}},
    )


def test_the_wire_form_is_canonical_json_and_deterministic() -> None:
    blob = sign(3)
    assert blob == sign(3)  # Ed25519 is deterministic, the JSON canonical
    outer = json.loads(blob)
    assert blob == json.dumps(outer, sort_keys=True, separators=(",", ":")).encode()
    assert set(outer) == {"signed", "sig"}
    sig = base64.urlsafe_b64decode(outer["sig"])
    CLOUD.public_key().verify(sig, DOMAIN + canonical_json(outer["signed"]))
    assert key_id_for(CLOUD.public_key()).startswith("ed25519:") and len(CLOUD_ID) == len("ed25519:") + 16


# -- the gateway in the middle: delay yes, forge or replay no ----------------------------------


def test_a_gateway_can_delay_an_envelope_until_it_expires() -> None:
    blob = sign(1, ttl_ms=HOUR)
    assert device().verify(blob, kind="command", audience="device:d1", now_ms=T0 + HOUR - 1).seq == 1
    with pytest.raises(ExpiredError, match=r"command envelope for 'device:d1' seq 1: expired at"):
        device().verify(blob, kind="command", audience="device:d1", now_ms=T0 + HOUR)


def test_a_forged_body_is_refused() -> None:
    blob = edit(sign(1), body={"op": "factory-reset"})
    with pytest.raises(SignatureError, match="bad signature"):
        device().verify(blob, kind="command", audience="device:d1", now_ms=T0)


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 99},
        {"expires_ms": T0 + 1000 * HOUR},
        {"issued_ms": T0 + 1},
        {"kind": "config"},
        {"audience": "device:d2"},
    ],
)
def test_any_edited_signed_field_is_refused(change: dict) -> None:
    v = device()
    kind, both = change.get("kind", "command"), ["device:d1", "device:d2"]
    with pytest.raises(SignatureError, match="bad signature"):
        v.verify(edit(sign(1), **change), kind=kind, audience=both, now_ms=T0)
    assert v.state() == {}  # nothing refused leaves a mark


def test_a_retargeted_audience_is_refused() -> None:
    # the gateway rewrites the audience so that d2 would run d1's command
    with pytest.raises(SignatureError, match="bad signature"):
        device().verify(edit(sign(1), audience="device:d2"), kind="command", audience="device:d2", now_ms=T0)
    # or delivers d1's envelope, untouched, to d2
    with pytest.raises(MisdirectedError, match=r"'device:d1' seq 1: addressed to 'device:d1'"):
        device().verify(sign(1), kind="command", audience="device:d2", now_ms=T0)


def test_a_signature_by_another_key_is_refused() -> None:
    gateway_key = Ed25519PrivateKey.generate()
    # claiming the cloud's key id
    with pytest.raises(SignatureError, match=rf"bad signature for key '{CLOUD_ID}'"):
        device().verify(sign(1, key=gateway_key), kind="command", audience="device:d1", now_ms=T0)
    # or under its own
    own = sign(1, key=gateway_key, key_id=key_id_for(gateway_key.public_key()))
    with pytest.raises(SignatureError, match="unknown signing key"):
        device().verify(own, kind="command", audience="device:d1", now_ms=T0)


def test_a_replayed_envelope_is_refused() -> None:
    v = device()
    first, second = sign(5), sign(6)
    v.verify(first, kind="command", audience="device:d1", now_ms=T0)
    with pytest.raises(ReplayError, match=r"'device:d1' seq 5: seq 5 is not above the highest accepted \(5\)") as err:
        v.verify(first, kind="command", audience="device:d1", now_ms=T0)
    assert (err.value.kind, err.value.audience, err.value.seq) == ("command", "device:d1", 5)
    v.verify(second, kind="command", audience="device:d1", now_ms=T0)
    with pytest.raises(ReplayError):  # an older one held back and released later
        v.verify(first, kind="command", audience="device:d1", now_ms=T0 + 1)
    with pytest.raises(ReplayError):
        v.verify(sign(4), kind="command", audience="device:d1", now_ms=T0 + 1)
    v.verify(sign(100), kind="command", audience="device:d1", now_ms=T0)  # gaps are fine


def test_a_forged_high_seq_does_not_burn_the_sequence() -> None:
    v = device()
    with pytest.raises(SignatureError):
        v.verify(edit(sign(1), seq=10**9), kind="command", audience="device:d1", now_ms=T0)
    with pytest.raises(ExpiredError):
        v.verify(sign(50, issued_ms=T0 - 2 * HOUR), kind="command", audience="device:d1", now_ms=T0)
    assert v.verify(sign(2), kind="command", audience="device:d1", now_ms=T0).seq == 2


def test_sequences_are_per_audience_and_kind() -> None:
    v = EnvelopeVerifier({CLOUD_ID: CLOUD.public_key()})
    accepted = ["device:d1", "site:plant-7"]
    v.verify(sign(5), kind="command", audience=accepted, now_ms=T0)
    v.verify(sign(1, kind="config"), kind="config", audience=accepted, now_ms=T0)
    v.verify(sign(1, audience="site:plant-7"), kind="command", audience=accepted, now_ms=T0)
    assert v.state() == {"device:d1": {"command": 5, "config": 1}, "site:plant-7": {"command": 1}}
    assert v.high_water("device:d1", "command") == 5 and v.high_water("device:d9", "command") is None


def test_the_wrong_kind_is_refused() -> None:
    config = sign(1, kind="config", body={"interval_s": 1})
    with pytest.raises(MisdirectedError, match=r"config envelope .* expected a 'command' envelope"):
        device().verify(config, kind="command", audience="device:d1", now_ms=T0)


def test_not_yet_valid_beyond_the_clock_skew_is_refused() -> None:
    v = EnvelopeVerifier({CLOUD_ID: CLOUD.public_key()}, max_skew_ms=60_000)
    v.check(sign(1), kind="command", audience="device:d1", now_ms=T0 - 60_000)
    with pytest.raises(ExpiredError, match="not valid until"):
        v.check(sign(1), kind="command", audience="device:d1", now_ms=T0 - 60_001)


def test_check_does_not_record_and_authenticate_ignores_time() -> None:
    v = device()
    blob = sign(3)
    v.check(blob, kind="command", audience="device:d1", now_ms=T0)
    v.check(blob, kind="command", audience="device:d1", now_ms=T0)
    assert v.state() == {}
    assert v.authenticate(blob).seq == 3  # long expired, still authentic
    with pytest.raises(ExpiredError):
        v.check(blob, kind="command", audience="device:d1", now_ms=T0 + 10 * HOUR)


def test_the_replay_mark_survives_a_restart_and_never_goes_down() -> None:
    before = device()
    before.verify(sign(8), kind="command", audience="device:d1", now_ms=T0)
    saved = json.loads(json.dumps(before.state()))  # what the caller persists
    after = device()
    after.load_state(saved)
    with pytest.raises(ReplayError):
        after.verify(sign(8), kind="command", audience="device:d1", now_ms=T0)
    after.verify(sign(9), kind="command", audience="device:d1", now_ms=T0)
    after.load_state(saved)  # an older saved state cannot reopen seq 9
    assert after.high_water("device:d1", "command") == 9
    with pytest.raises(ValueError, match="bad replay state"):
        after.load_state({"device:d1": {"command": "9"}})


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"null",
        b"[]",
        b"{}",
        b'{"signed": {}}',
        b'{"signed": {}, "sig": ""}',
        b"\xff\xfe",
        b'{"signed": {"v": 1}, "sig": "AAAA"}',
        b"[" * 100_000 + b"]" * 100_000,
        b"x" * (2 << 20),
    ],
)
def test_garbage_is_refused_as_a_signature_error(blob: bytes) -> None:
    with pytest.raises(SignatureError):
        device().verify(blob, kind="command", audience="device:d1", now_ms=T0)


def test_a_stripped_or_respelled_signature_is_refused() -> None:
    outer = json.loads(sign(1))
    del outer["sig"]
    with pytest.raises(SignatureError, match="'signed' and 'sig'"):
        device().verify(canonical_json(outer), kind="command", audience="device:d1", now_ms=T0)
    outer = json.loads(sign(1))
    outer["sig"] = outer["sig"].rstrip("=")  # same bytes, another spelling
    with pytest.raises(SignatureError, match="base64url"):
        device().verify(canonical_json(outer), kind="command", audience="device:d1", now_ms=T0)


@pytest.mark.parametrize(
    "change",
    [{"seq": True}, {"seq": -1.5}, {"body": []}, {"v": 2}, {"kind": ""}, {"extra": 1}, {"expires_ms": "soon"}],
)
def test_malformed_signed_fields_are_refused(change: dict) -> None:
    with pytest.raises(SignatureError, match="malformed|unsupported"):
        device().verify(edit(sign(1), **change), kind="command", audience="device:d1", now_ms=T0)


def test_non_json_numbers_are_refused() -> None:
    for raw in (b"NaN", b"Infinity", b"1e999"):
        blob = sign(1).replace(b'"op":"reboot"', b'"op":' + raw)
        with pytest.raises(SignatureError, match="malformed"):
            device().verify(blob, kind="command", audience="device:d1", now_ms=T0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"body": {"t": (1, 2)}}, "round-trip"),
        ({"body": {1: "x"}}, "round-trip"),
        ({"body": {"x": float("nan")}}, "NaN|JSON"),
        ({"seq": -1}, "non-negative"),
        ({"seq": True}, "non-negative"),
        ({"ttl_ms": 0}, "expire after"),
        ({"audience": ""}, "audience"),
    ],
)
def test_signing_refuses_what_would_not_verify_as_given(kwargs: dict, match: str) -> None:
    seq = kwargs.pop("seq", 1)
    with pytest.raises(ValueError, match=match):
        sign(seq, **kwargs)


def test_every_error_is_a_trust_error_naming_kind_audience_and_seq() -> None:
    with pytest.raises(TrustError) as err:
        device().verify(sign(4, kind="plan", audience="site:s1"), kind="plan", audience="site:s2", now_ms=T0)
    assert str(err.value).startswith("plan envelope for 'site:s1' seq 4: ")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_byte_changed_is_refused_or_changes_nothing(data: st.DataObject) -> None:
    blob = bytearray(sign(1, body={"op": "set", "n": 12345, "s": "abc"}))
    at = data.draw(st.integers(0, len(blob) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != blob[at]))
    blob[at] = new
    try:
        env = device().verify(bytes(blob), kind="command", audience="device:d1", now_ms=T0)
    except TrustError:
        return
    original = sign(1, body={"op": "set", "n": 12345, "s": "abc"})
    assert env == device().verify(original, kind="command", audience="device:d1", now_ms=T0)

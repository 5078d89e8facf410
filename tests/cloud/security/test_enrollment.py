"""Enrollment decisions: claims, takeover, site checks, rules and the per-gateway rate limit."""

from __future__ import annotations

import dataclasses

import pytest
import zmq

import cloud.security.enrollment
from cloud.security.enrollment import (
    ClaimToken,
    DeviceBinding,
    EnrollDecision,
    Enroller,
    EnrollRequest,
    EnrollRule,
    Preauthorization,
    claim_token_id,
    new_claim_token,
)
from common.errors import ConfigError

T0 = 1_900_000_000_000
DAY = 86_400_000
KEY_A, KEY_B = zmq.curve_keypair()[0], zmq.curve_keypair()[0]
RULES = [
    EnrollRule(hw_prefix="rpi4", groups=("raspberry",), config={"sample_s": 10}),
    EnrollRule(serial_prefix="SN-7", groups=("line-7", "raspberry"), config={"sample_s": 5, "line": 7}),
    EnrollRule(site="plant-8", groups=("plant-8-only",)),
]


def request(
    device_id: str = "dev-1", *, key: bytes = KEY_A, token: str | None = None, hw: str = "rpi4-b", serial: str = "SN-7001"
) -> EnrollRequest:
    return EnrollRequest(device_id, key, hw, serial, claim_token=token)


def decide(
    enroller: Enroller, req: EnrollRequest, *, gateway: str = "gw-1", site: str = "plant-7", now_ms: int = T0, **facts
) -> EnrollDecision:
    return enroller.decide(req, gateway_id=gateway, gateway_site=site, now_ms=now_ms, **facts)


@pytest.fixture
def site_token() -> tuple[str, ClaimToken]:
    return new_claim_token("plant-7", uses=2, expires_ms=T0 + 7 * DAY)


def test_all() -> None:
    assert all(hasattr(cloud.security.enrollment, name) for name in cloud.security.enrollment.__all__)
    assert {"Enroller", "EnrollDecision", "EnrollRequest", "new_claim_token"} <= set(cloud.security.enrollment.__all__)


# -- claim tokens -----------------------------------------------------------------------------


def test_a_claim_token_is_shown_once_and_stored_hashed() -> None:
    text, record = new_claim_token("plant-7", uses=50, expires_ms=T0 + DAY)
    secret = text.split("_", 2)[2]
    assert text.startswith(f"ect_{record.token_id}_") and claim_token_id(text) == record.token_id
    assert secret not in record.secret_hash and secret not in repr(record)
    assert (record.site, record.max_uses, record.uses, record.expires_ms) == ("plant-7", 50, 0, T0 + DAY)
    assert claim_token_id("ef_abc_def") is None and claim_token_id("nonsense") is None
    with pytest.raises(ValueError, match="at least one use"):
        new_claim_token("plant-7", uses=0, expires_ms=T0)


def test_a_valid_token_enrolls_with_site_groups_and_config(site_token) -> None:
    text, record = site_token
    d = decide(Enroller(RULES), request(token=text), token=record)
    assert d == EnrollDecision(
        "accept",
        f"device 'dev-1': enrolled at site 'plant-7' by claim token {record.token_id}",
        "dev-1",
        site="plant-7",
        groups=("raspberry", "line-7"),
        config={"sample_s": 5, "line": 7},
        consume_token=record.token_id,
    )


def test_a_token_is_used_up_after_its_uses(site_token) -> None:
    text, record = site_token
    enroller = Enroller()
    for i in range(record.max_uses):
        d = decide(enroller, request(f"dev-{i}", key=zmq.curve_keypair()[0], token=text), token=record)
        assert d.outcome == "accept" and d.consume_token == record.token_id
        record = dataclasses.replace(record, uses=record.uses + 1)  # what the store does with consume_token
    d = decide(enroller, request("dev-9", token=text), token=record)
    assert d.outcome == "refuse"
    assert d.reason == f"device 'dev-9': claim token {record.token_id} is used up (2 of 2 uses)"


def test_an_expired_token_is_refused(site_token) -> None:
    text, record = site_token
    d = decide(Enroller(), request(token=text), token=record, now_ms=T0 + 7 * DAY)
    assert (d.outcome, d.reason) == ("refuse", f"device 'dev-1': claim token {record.token_id} expired")


def test_a_wrong_unknown_malformed_or_revoked_token_is_refused(site_token) -> None:
    text, record = site_token
    e = Enroller()
    tid = record.token_id
    cases = [
        (f"ect_{tid}_{'x' * 43}", record, f"wrong secret for claim token {tid}"),
        (text, None, f"unknown claim token {tid}"),
        ("ect_0123_abc", record, "unknown claim token 0123"),
        ("hello", record, "malformed claim token"),
        ("ef_" + text[4:], record, "malformed claim token"),  # an API token is not a claim token
        (text, dataclasses.replace(record, revoked=True), f"claim token {tid} is revoked"),
    ]
    for presented, stored, why in cases:
        d = decide(e, request(token=presented), token=stored)
        assert (d.outcome, d.reason, d.consume_token) == ("refuse", f"device 'dev-1': {why}", None)


def test_a_token_for_another_site_is_refused(site_token) -> None:
    text, record = site_token
    d = decide(Enroller(), request(token=text), token=record, gateway="gw-8", site="plant-8")
    assert d.outcome == "refuse"
    assert "claim is for site 'plant-7' but gateway 'gw-8' is at site 'plant-8'" in d.reason


# -- factory serials --------------------------------------------------------------------------


def test_a_preauthorized_serial_enrolls() -> None:
    d = decide(Enroller(RULES), request(), preauth=Preauthorization("SN-7001", "plant-7"))
    assert (d.outcome, d.site, d.groups, d.consume_token) == ("accept", "plant-7", ("raspberry", "line-7"), None)
    assert d.reason == "device 'dev-1': enrolled at site 'plant-7' by serial 'SN-7001'"


def test_an_unknown_serial_waits_as_pending() -> None:
    d = decide(Enroller(RULES), request(serial="SN-9999"))
    why = "device 'dev-1': serial 'SN-9999' is not preauthorized; waiting for approval"
    assert d == EnrollDecision("pending", why, "dev-1", site="plant-7")
    # a preauthorization looked up for another serial is no preauthorization
    assert decide(Enroller(), request(serial="SN-1"), preauth=Preauthorization("SN-2", "plant-7")).outcome == "pending"


def test_approval_is_a_preauthorization_the_next_attempt_uses() -> None:
    e = Enroller()
    assert decide(e, request(serial="SN-1")).outcome == "pending"
    approved = Preauthorization("SN-1", "plant-7", device_id="dev-1")
    assert decide(e, request(serial="SN-1"), preauth=approved).outcome == "accept"


def test_a_serial_pinned_to_a_device_id_or_a_site_is_refused_elsewhere() -> None:
    pinned = Preauthorization("SN-7001", "plant-7", device_id="dev-1")
    d = decide(Enroller(), request("dev-2"), preauth=pinned)
    assert d.outcome == "refuse"
    assert d.reason == "device 'dev-2': serial 'SN-7001' is preauthorized for another device id"
    d = decide(Enroller(), request(), preauth=pinned, gateway="gw-8", site="plant-8")
    assert d.outcome == "refuse" and "claim is for site 'plant-7'" in d.reason


# -- takeover ---------------------------------------------------------------------------------


def test_a_device_id_bound_to_another_key_cannot_be_taken_over(site_token) -> None:
    text, record = site_token
    bound = DeviceBinding("dev-1", KEY_A, "plant-7")
    for facts in ({"token": record}, {"preauth": Preauthorization("SN-7001", "plant-7")}, {}):
        req = request(key=KEY_B, token=text if "token" in facts else None)
        d = decide(Enroller(), req, binding=bound, **facts)
        assert d.outcome == "refuse", facts
        assert d.reason == (
            "device 'dev-1': is bound to another CurveZMQ key; an operator must allow re-provisioning first"
        )
        assert d.consume_token is None


def test_the_same_key_re_enrolls() -> None:
    preauth, binding = Preauthorization("SN-7001", "plant-7"), DeviceBinding("dev-1", KEY_A, "plant-7")
    d = decide(Enroller(), request(key=KEY_A), preauth=preauth, binding=binding)
    assert d.outcome == "accept" and not d.clear_reprovision


def test_an_operator_allowed_reprovision_replaces_the_key_once(site_token) -> None:
    text, record = site_token
    allowed = DeviceBinding("dev-1", KEY_A, "plant-7", reprovision=True)
    d = decide(Enroller(), request(key=KEY_B, token=text), token=record, binding=allowed)
    assert d.outcome == "accept" and d.clear_reprovision and d.reason.endswith("(re-provisioned)")
    assert "reprovision" not in {f.name for f in dataclasses.fields(EnrollRequest)}  # never the device's say


# -- request shape and rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "req",
    [
        EnrollRequest("dev-1", b"short", "hw", "SN"),
        EnrollRequest("dev-1", b"~" * 40, "hw", "SN"),
        EnrollRequest("dev-1", KEY_A.decode(), "hw", "SN"),  # type: ignore[arg-type]
        EnrollRequest("", KEY_A, "hw", "SN"),
        EnrollRequest("dev-1", KEY_A, "", "SN"),
        EnrollRequest("dev-1", KEY_A, "hw", ""),
    ],
)
def test_a_malformed_request_is_refused(req: EnrollRequest) -> None:
    d = decide(Enroller(), req, preauth=Preauthorization("SN", "plant-7"))
    assert d.outcome == "refuse" and "malformed request" in d.reason


def test_rules_match_on_prefixes_and_site_in_order() -> None:
    preauth8 = Preauthorization("X-1", "plant-8")
    d = decide(Enroller(RULES), request(hw="x86", serial="X-1"), preauth=preauth8, gateway="gw-8", site="plant-8")
    assert (d.groups, d.config) == (("plant-8-only",), {})
    d = decide(Enroller(RULES), request(hw="rpi4", serial="X-1"), preauth=dataclasses.replace(preauth8, site="plant-7"))
    assert (d.groups, d.config) == (("raspberry",), {"sample_s": 10})


# -- rate limit -------------------------------------------------------------------------------


def test_each_gateway_is_rate_limited_on_its_own(monkeypatch: pytest.MonkeyPatch, site_token) -> None:
    text, record = site_token
    hashed = []
    real = cloud.security.enrollment.verify_secret
    monkeypatch.setattr(cloud.security.enrollment, "verify_secret", lambda *a: hashed.append(1) or real(*a))
    e = Enroller(rate_per_s=1.0, burst=3)
    wrong = f"ect_{record.token_id}_{'x' * 43}"
    outcomes = [decide(e, request(token=wrong), token=record).reason for _ in range(5)]
    assert outcomes[:3] == [f"device 'dev-1': wrong secret for claim token {record.token_id}"] * 3
    assert outcomes[3:] == ["device 'dev-1': enrollment rate limit of gateway 'gw-1' exceeded"] * 2
    assert len(hashed) == 3  # refused before any hashing work
    # another gateway has its own bucket
    assert decide(e, request(serial="SN-X"), gateway="gw-2").outcome == "pending"
    # unknown devices count too: pending is not free
    for _ in range(2):
        assert decide(e, request(serial="SN-X"), gateway="gw-2").outcome == "pending"
    assert "rate limit" in decide(e, request(serial="SN-X"), gateway="gw-2").reason
    # one second later gw-1 has one attempt again, and the valid token gets through
    assert decide(e, request(token=text), token=record, now_ms=T0 + 1000).outcome == "accept"
    assert "rate limit" in decide(e, request(token=text), token=record, now_ms=T0 + 1000).reason
    # a clock that goes backwards adds nothing
    assert "rate limit" in decide(e, request(token=text), token=record, now_ms=T0).reason


def test_a_bad_rate_is_refused_at_construction() -> None:
    with pytest.raises(ConfigError):
        Enroller(rate_per_s=0)
    with pytest.raises(ConfigError):
        Enroller(burst=0)

"""Cloud-signed commands: a gateway can delay them but cannot forge, alter, re-address or replay them."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import common.command_auth
from common.command_auth import CommandVerifier, sign_command

NOW = 1_700_000_000_000
KEY = Ed25519PrivateKey.generate()


def signed(device="dev-1", seq=5, name="ping", args=None, issued=NOW - 1000, expires=NOW + 60_000, key=KEY):
    return sign_command(device, seq, name, args or {}, issued_ms=issued, expires_ms=expires, key=key)


def test_public_names() -> None:
    assert {"CommandVerifier", "sign_command", "command_body"} <= set(common.command_auth.__all__)


def test_a_command_the_cloud_signed_is_accepted_and_signing_is_deterministic() -> None:
    v = CommandVerifier("dev-1", [KEY.public_key()])
    assert v.problem(5, "ping", {}, NOW + 60_000, signed(), NOW) is None
    assert signed() == signed()  # a resend is the same bytes


@pytest.mark.parametrize(
    ("seq", "name", "args", "expires", "envelope", "why"),
    [
        (5, "ping", {}, NOW + 60_000, b"", "not signed by the cloud"),
        (5, "reboot", {}, NOW + 60_000, signed(), "differs from what the cloud signed"),
        (5, "ping", {"x": "1"}, NOW + 60_000, signed(), "differs from what the cloud signed"),
        (5, "ping", {}, NOW + 120_000, signed(), "differs from what the cloud signed"),
        (6, "ping", {}, NOW + 60_000, signed(), "replayed under a new number"),
        (5, "ping", {}, NOW + 60_000, signed(device="dev-2"), "addressed to 'dev-2'"),
        (5, "ping", {}, NOW + 60_000, signed(key=Ed25519PrivateKey.generate()), "unknown signing key"),
        (5, "ping", {}, NOW - 1, signed(issued=NOW - 9000, expires=NOW - 1), "expired"),
        (5, "ping", {}, NOW + 60_000, b"{not json", "malformed envelope"),
    ],
    ids=["unsigned", "renamed", "args-altered", "expiry-extended", "new-number", "other-device", "attacker-key",
         "expired", "garbage"],
)
def test_forged_altered_replayed_or_expired_commands_are_refused_with_the_reason(seq, name, args, expires, envelope, why) -> None:
    v = CommandVerifier("dev-1", [KEY.public_key()])
    problem = v.problem(seq, name, args, expires, envelope, NOW)
    assert problem is not None and why in problem and f"command {seq}" in problem

"""Operator access: the role table, site scopes, deny by default, and hashed API tokens."""

from __future__ import annotations

import dataclasses
import hmac

import pytest

import cloud.security.rbac
from cloud.security.rbac import (
    PERMISSIONS,
    Decision,
    Principal,
    Role,
    User,
    authenticate,
    authorize,
    hash_secret,
    new_token,
    parse_token,
    principal_for,
    verify_secret,
)

T0 = 1_900_000_000_000
ALICE = User("alice", Role.ADMIN)
OLGA = User("olga", Role.OPERATOR, frozenset({"plant-7"}))


def test_all() -> None:
    assert all(hasattr(cloud.security.rbac, name) for name in cloud.security.rbac.__all__)
    assert {"authorize", "Decision", "Role", "PERMISSIONS", "authenticate"} <= set(cloud.security.rbac.__all__)


def test_roles_are_ordered_and_named() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.RELEASE_MANAGER < Role.ADMIN
    assert [r.label for r in Role] == ["viewer", "operator", "release-manager", "admin"]
    assert all(Role.parse(r.label) is r for r in Role)
    with pytest.raises(ValueError, match="unknown role 'root'; roles: viewer, operator"):
        Role.parse("root")


def test_the_table_names_the_brief_s_examples() -> None:
    assert PERMISSIONS["devices.list"] is Role.VIEWER
    assert PERMISSIONS["devices.revoke"] is Role.OPERATOR
    assert PERMISSIONS["release.create"] is Role.RELEASE_MANAGER
    assert PERMISSIONS["users.manage"] is Role.ADMIN


@pytest.mark.parametrize("action", sorted(PERMISSIONS))
@pytest.mark.parametrize("role", list(Role))
def test_each_role_may_take_exactly_the_actions_at_or_below_it(action: str, role: Role) -> None:
    decision = authorize(Principal("p", role), action)
    assert decision.allowed is (role >= PERMISSIONS[action])
    assert bool(decision) is decision.allowed
    if not decision.allowed:
        assert decision.reason == f"p ({role.label}): {action} needs {PERMISSIONS[action].label}"


@pytest.mark.parametrize("action", ["devices.delete", "", "DEVICES.LIST", "devices.list ", "shell"])
def test_an_action_not_in_the_table_is_denied_even_to_an_admin(action: str) -> None:
    decision = authorize(Principal("alice", Role.ADMIN), action, site="plant-7")
    assert decision == Decision(False, f"alice (admin): unknown action {action!r} is denied by default")


def test_a_site_scoped_principal_acts_on_its_sites_only() -> None:
    olga = principal_for(OLGA)
    assert authorize(olga, "devices.revoke", site="plant-7") == Decision(
        True, "olga (operator): devices.revoke on site 'plant-7' allowed"
    )
    refused = authorize(olga, "devices.revoke", site="plant-8")
    assert not refused.allowed and "outside scope ['plant-7']" in refused.reason
    fleet_wide = authorize(olga, "devices.list")
    assert not fleet_wide.allowed and "fleet-wide needs an unscoped principal" in fleet_wide.reason
    # scope never lifts the role: a scoped operator still cannot create a release there
    assert not authorize(olga, "release.create", site="plant-7").allowed


def test_an_unscoped_principal_acts_fleet_wide_and_on_any_site() -> None:
    alice = principal_for(ALICE)
    assert authorize(alice, "users.manage").allowed
    assert authorize(alice, "devices.revoke", site="anywhere").allowed


def test_an_empty_scope_allows_no_site() -> None:
    nobody = Principal("n", Role.ADMIN, frozenset())
    assert not authorize(nobody, "devices.list", site="plant-7").allowed
    assert not authorize(nobody, "devices.list").allowed


# -- tokens -----------------------------------------------------------------------------------


def test_a_token_is_stored_only_as_a_salted_hash() -> None:
    text, record = new_token(ALICE, now_ms=T0)
    token_id, secret = parse_token(text)  # type: ignore[misc]
    assert text == f"ef_{token_id}_{secret}" and record.token_id == token_id
    assert secret not in record.secret_hash and secret not in repr(record) and text not in repr(record)
    assert record.secret_hash.startswith("scrypt$16384$8$1$")
    assert verify_secret(secret, record.secret_hash)
    assert not verify_secret(secret + "x", record.secret_hash)
    # per-token salt: the same secret hashes differently each time
    assert hash_secret("s3cret") != hash_secret("s3cret")
    assert hash_secret("s3cret", salt=b"0" * 16) == hash_secret("s3cret", salt=b"0" * 16)


@pytest.mark.parametrize(
    "stored",
    ["", "scrypt$", "bcrypt$1$2$3$4$5", "scrypt$x$8$1$AA==$AA==", "scrypt$3$8$1$AA==$AA==", "scrypt$16384$8$1$!$!"],
)
def test_a_malformed_stored_hash_matches_nothing(stored: str) -> None:
    assert verify_secret("anything", stored) is False


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(cloud.security.rbac.hmac, "compare_digest", spy)
    text, record = new_token(ALICE, now_ms=T0)
    authenticate(text, record, ALICE, now_ms=T0)
    assert len(calls) == 1


def test_the_right_token_authenticates_its_user() -> None:
    text, record = new_token(OLGA, now_ms=T0)
    principal, reason = authenticate(text, record, OLGA, now_ms=T0 + 1)
    assert principal == Principal("olga", Role.OPERATOR, frozenset({"plant-7"}), record.token_id)
    assert reason == f"token {record.token_id} of 'olga'"


def test_wrong_unknown_malformed_revoked_or_expired_tokens_are_refused() -> None:
    text, record = new_token(ALICE, now_ms=T0, expires_ms=T0 + 1000)
    tid = record.token_id
    wrong = f"ef_{tid}_{'x' * 43}"
    assert authenticate(wrong, record, ALICE, now_ms=T0) == (None, f"wrong secret for token {tid}")
    assert authenticate(text, None, ALICE, now_ms=T0) == (None, f"unknown token {tid}")
    _, other = new_token(ALICE, now_ms=T0)
    assert authenticate(text, other, ALICE, now_ms=T0)[1] == f"unknown token {tid}"  # looked up the wrong row
    for bad in ("", "ef_", "ef__x", "xx_abc_def", "ef_NOTHEX_secret", "Bearer " + text):
        assert authenticate(bad, record, ALICE, now_ms=T0) == (None, "malformed token")
    revoked = dataclasses.replace(record, revoked=True)
    assert authenticate(text, revoked, ALICE, now_ms=T0) == (None, f"token {tid} is revoked")
    assert authenticate(text, record, ALICE, now_ms=T0 + 1000) == (None, f"token {tid} expired")
    disabled = User("alice", Role.ADMIN, disabled=True)
    assert authenticate(text, record, disabled, now_ms=T0)[0] is None
    assert authenticate(text, record, OLGA, now_ms=T0)[0] is None  # the record names alice, not olga


def test_a_wrong_secret_reveals_nothing_about_revocation_or_expiry() -> None:
    text, record = new_token(ALICE, now_ms=T0, expires_ms=T0 + 1)
    revoked = dataclasses.replace(record, revoked=True)
    wrong = f"ef_{record.token_id}_guess"
    assert authenticate(wrong, revoked, ALICE, now_ms=T0 + 5)[1] == f"wrong secret for token {record.token_id}"


def test_a_token_can_be_narrower_than_its_user_never_wider() -> None:
    text, record = new_token(OLGA, now_ms=T0, role=Role.VIEWER, sites=frozenset({"plant-7", "plant-8"}))
    principal, _ = authenticate(text, record, OLGA, now_ms=T0)
    assert principal is not None
    assert principal.role is Role.VIEWER and principal.sites == frozenset({"plant-7"})
    assert authorize(principal, "devices.list", site="plant-7").allowed
    assert not authorize(principal, "devices.revoke", site="plant-7").allowed
    assert not authorize(principal, "devices.list", site="plant-8").allowed
    with pytest.raises(ValueError, match="cannot outrank its user"):
        new_token(OLGA, now_ms=T0, role=Role.ADMIN)


def test_a_user_demoted_after_the_token_was_made_acts_at_the_new_role() -> None:
    text, record = new_token(ALICE, now_ms=T0)
    demoted = User("alice", Role.VIEWER, frozenset({"plant-1"}))
    principal, _ = authenticate(text, record, demoted, now_ms=T0)
    assert principal is not None and principal.role is Role.VIEWER and principal.sites == frozenset({"plant-1"})
    assert not authorize(principal, "users.manage").allowed

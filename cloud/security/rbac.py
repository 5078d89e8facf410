"""Operator access: roles, site scopes, hashed API tokens, and the one ``authorize`` decision.

Roles are ordered: viewer < operator < release-manager < admin. ``PERMISSIONS``
maps each action to the least role allowed to take it; an action missing from
the table is denied (deny by default). A principal scoped to sites may act only
on those sites, and never fleet-wide (``site=None``): a scoped viewer lists
devices one site at a time.

An API token reads ``ef_<id>_<secret>``. Only a salted scrypt hash of the
secret is stored; the id finds the record, ``hmac.compare_digest`` compares.
A token can be narrower than its user (a lower role, fewer sites), never wider:
the principal gets the lower role and the intersection of sites.

Decisions return ``Decision(allowed, reason)`` in the style of pyzmq's
authenticator, so the audit log can record the reason for every refusal.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "PERMISSIONS",
    "Decision",
    "Principal",
    "Role",
    "TokenRecord",
    "User",
    "authenticate",
    "authorize",
    "hash_secret",
    "new_token",
    "parse_token",
    "principal_for",
    "verify_secret",
]

TOKEN_PREFIX = "ef"
# scrypt cost: n=2**14, r=8 is about 16 MiB and some tens of ms per check; stored with each hash
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    RELEASE_MANAGER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, label: str) -> Role:
        try:
            return cls[label.upper().replace("-", "_")]
        except KeyError:
            raise ValueError(f"unknown role {label!r}; roles: {', '.join(r.label for r in cls)}") from None


PERMISSIONS: Mapping[str, Role] = {
    "devices.list": Role.VIEWER,
    "devices.show": Role.VIEWER,
    "sites.list": Role.VIEWER,
    "telemetry.read": Role.VIEWER,
    "metrics.read": Role.VIEWER,  # GET /metrics (Prometheus): fleet-wide, so an unscoped principal
    "audit.read": Role.OPERATOR,
    "devices.preauthorize": Role.OPERATOR,
    "devices.approve": Role.OPERATOR,
    "devices.revoke": Role.OPERATOR,
    "devices.quarantine": Role.OPERATOR,
    "devices.rotate": Role.OPERATOR,
    "devices.command": Role.OPERATOR,
    "config.set": Role.OPERATOR,
    "devices.tag": Role.OPERATOR,
    "devices.set_state": Role.OPERATOR,
    "groups.manage": Role.OPERATOR,
    "alerts.ack": Role.OPERATOR,
    "alerts.silence": Role.OPERATOR,
    "enroll_tokens.create": Role.OPERATOR,
    "ddi_tokens.issue": Role.OPERATOR,  # a DDI device's TargetToken (cloud/http/ddi.py)
    "ddi_tokens.revoke": Role.OPERATOR,
    "enroll_tokens.revoke": Role.OPERATOR,
    "release.create": Role.RELEASE_MANAGER,
    "rollout.start": Role.RELEASE_MANAGER,
    "rollout.pause": Role.RELEASE_MANAGER,
    "rollout.abort": Role.RELEASE_MANAGER,
    "enroll_rules.manage": Role.ADMIN,
    "users.manage": Role.ADMIN,
    "tokens.manage": Role.ADMIN,
    "ca.rotate": Role.ADMIN,
    "api.unmapped": Role.ADMIN,  # a mutating route the access table does not name yet (cloud.http.access)
}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True, slots=True)
class User:
    """An operator. ``sites=None`` means every site."""

    user_id: str
    role: Role
    sites: frozenset[str] | None = None
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the store keeps of an API token: never the secret, only its hash."""

    token_id: str
    user_id: str
    secret_hash: str  # hash_secret's text form
    role: Role
    sites: frozenset[str] | None
    created_ms: int
    expires_ms: int | None = None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting, with the role and sites in force for this request."""

    name: str
    role: Role
    sites: frozenset[str] | None = None
    token_id: str | None = None


def hash_secret(secret: str, *, salt: bytes | None = None, n: int = SCRYPT_N) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64): a salted, slow hash of a secret."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``; a malformed ``stored`` matches nothing."""
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.urlsafe_b64decode(digest)
        got = hashlib.scrypt(
            secret.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def new_token(
    user: User,
    *,
    now_ms: int,
    role: Role | None = None,
    sites: frozenset[str] | None = None,
    expires_ms: int | None = None,
    prefix: str = TOKEN_PREFIX,
) -> tuple[str, TokenRecord]:
    """A fresh token for ``user``: the text to show once, and the record to store."""
    role = user.role if role is None else role
    if role > user.role:
        raise ValueError(f"a token of {user.user_id!r} cannot outrank its user ({role.label} > {user.role.label})")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        user_id=user.user_id,
        secret_hash=hash_secret(secret),
        role=role,
        sites=_intersect(user.sites, sites),
        created_ms=now_ms,
        expires_ms=expires_ms,
    )
    return f"{prefix}_{token_id}_{secret}", record


def parse_token(presented: str, prefix: str = TOKEN_PREFIX) -> tuple[str, str] | None:
    """``(token_id, secret)`` from ``<prefix>_<id>_<secret>``, or None if it is not shaped so."""
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or not parts[2]:
        return None
    if not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1], parts[2]


def authenticate(
    presented: str, record: TokenRecord | None, user: User | None, *, now_ms: int
) -> tuple[Principal | None, str]:
    """The principal a presented token stands for, or None and why not.

    The caller parses the id (``parse_token``) and looks up ``record`` and its ``user``.
    """
    parsed = parse_token(presented)
    if parsed is None:
        return None, "malformed token"
    token_id, secret = parsed
    if record is None or record.token_id != token_id:
        return None, f"unknown token {token_id}"
    if not verify_secret(secret, record.secret_hash):
        return None, f"wrong secret for token {token_id}"
    if record.revoked:
        return None, f"token {token_id} is revoked"
    if record.expires_ms is not None and now_ms >= record.expires_ms:
        return None, f"token {token_id} expired"
    if user is None or user.user_id != record.user_id or user.disabled:
        return None, f"user {record.user_id!r} of token {token_id} is unknown or disabled"
    return principal_for(user, record), f"token {token_id} of {user.user_id!r}"


def principal_for(user: User, record: TokenRecord | None = None) -> Principal:
    """The user acting through ``record``: the lower of the two roles, the intersection of sites."""
    if record is None:
        return Principal(user.user_id, user.role, user.sites)
    role = min(user.role, record.role)
    return Principal(user.user_id, role, _intersect(user.sites, record.sites), record.token_id)


def authorize(principal: Principal, action: str, site: str | None = None) -> Decision:
    """Whether ``principal`` may take ``action`` on ``site`` (None: fleet-wide), and why."""
    need = PERMISSIONS.get(action)
    who = f"{principal.name} ({principal.role.label})"
    if need is None:
        return Decision(False, f"{who}: unknown action {action!r} is denied by default")
    if principal.role < need:
        return Decision(False, f"{who}: {action} needs {need.label}")
    if principal.sites is not None:
        if site is None:
            return Decision(False, f"{who}: {action} fleet-wide needs an unscoped principal")
        if site not in principal.sites:
            return Decision(False, f"{who}: {action} on site {site!r} is outside scope {sorted(principal.sites)}")
    where = f" on site {site!r}" if site is not None else ""
    return Decision(True, f"{who}: {action}{where} allowed")


def _intersect(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return None if b is None else frozenset(b)
    return frozenset(a) if b is None else frozenset(a) & frozenset(b)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()

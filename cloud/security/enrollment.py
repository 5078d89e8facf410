"""Zero-touch enrollment decisions, sans-IO: a request and the facts in, a decision out.

A new device makes its CurveZMQ keys on first boot and asks to enroll through
its gateway, with one of two claims:

- its factory serial, pre-registered with a site (``Preauthorization``); an
  unknown serial waits as ``pending`` until an operator approves it (approval
  is a preauthorization, so the device's next attempt is accepted);
- a site claim token ``ect_<id>_<secret>`` (``ClaimToken``): only a salted hash
  of the secret is stored; it has an expiry and a use limit.

``Enroller.decide`` checks, in order: the gateway's rate limit (one
``common.shaping.TokenBucket`` per gateway, counting attempts, so no gateway
can flood the cloud; checked before any hashing work); the request's shape;
the claim; a takeover (a device id already bound to another CurveZMQ key is
refused unless an operator set ``reprovision`` on the binding: the flag is
never taken from the request); that the claim's site is the gateway's site.
Then every matching ``EnrollRule`` (hardware and serial prefixes, optionally
a site), in order, adds its groups and merges its config (later rules win).

The caller looks up the facts (preauthorization by serial, token by
``claim_token_id``, binding by device id) and applies the decision's effects in
one transaction: consume a token use (``UPDATE ... SET uses = uses + 1 WHERE
uses < max_uses``, refusing if no row changed), bind the key, clear the
re-provision flag, issue the certificate.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq.utils.z85

from cloud.security.rbac import hash_secret, parse_token, verify_secret
from common.shaping import TokenBucket

__all__ = [
    "ClaimToken",
    "DeviceBinding",
    "EnrollDecision",
    "EnrollRequest",
    "EnrollRule",
    "Enroller",
    "Preauthorization",
    "claim_token_id",
    "new_claim_token",
    "parse_rules",
]

CLAIM_PREFIX = "ect"
Outcome = Literal["accept", "pending", "refuse"]


@dataclass(frozen=True, slots=True)
class EnrollRequest:
    device_id: str
    curve_key: bytes  # Z85: the key the device connected with (its CurveZMQ handshake proves possession)
    hw: str
    serial: str
    claim_token: str | None = None  # None: claim by factory serial


@dataclass(frozen=True, slots=True)
class Preauthorization:
    """A factory serial registered for a site (``devices preauthorize`` or a CSV import)."""

    serial: str
    site: str
    device_id: str | None = None  # if set, only this device id may claim the serial


@dataclass(frozen=True, slots=True)
class ClaimToken:
    token_id: str
    site: str
    secret_hash: str
    expires_ms: int
    max_uses: int
    uses: int = 0
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """The CurveZMQ key a device id is bound to; ``reprovision`` is set by an operator only."""

    device_id: str
    curve_key: bytes
    site: str
    reprovision: bool = False


@dataclass(frozen=True, slots=True)
class EnrollRule:
    """Groups and config for devices whose hardware and serial start with these prefixes."""

    hw_prefix: str = ""
    serial_prefix: str = ""
    site: str | None = None  # None: any site
    groups: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, req: EnrollRequest, site: str) -> bool:
        return (
            (self.site is None or self.site == site)
            and req.hw.startswith(self.hw_prefix)
            and req.serial.startswith(self.serial_prefix)
        )


@dataclass(frozen=True, slots=True)
class EnrollDecision:
    outcome: Outcome
    reason: str
    device_id: str
    site: str | None = None
    groups: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    consume_token: str | None = None  # a claim token id whose use count to increment
    clear_reprovision: bool = False  # the binding's key is replaced: clear the operator's flag


def new_claim_token(site: str, *, uses: int, expires_ms: int) -> tuple[str, ClaimToken]:
    """A site claim token: the text to hand out once, and the record to store."""
    if uses < 1:
        raise ValueError(f"a claim token for {site!r} needs at least one use, not {uses}")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    record = ClaimToken(token_id, site, hash_secret(secret), expires_ms, max_uses=uses)
    return f"{CLAIM_PREFIX}_{token_id}_{secret}", record


def claim_token_id(text: str) -> str | None:
    """The id to look a presented claim token up by, or None if it is malformed."""
    parsed = parse_token(text, prefix=CLAIM_PREFIX)
    return parsed[0] if parsed else None


class Enroller:
    """The enrollment policy: rules, and a rate limit per gateway (its only state)."""

    def __init__(self, rules: Sequence[EnrollRule] = (), *, rate_per_s: float = 0.5, burst: int = 20) -> None:
        TokenBucket(rate_per_s, burst)  # refuses a bad rate or burst now, not at the first request
        self.rules = tuple(rules)
        self._rate, self._burst = rate_per_s, burst
        self._buckets: dict[str, TokenBucket] = {}

    def decide(
        self,
        req: EnrollRequest,
        *,
        gateway_id: str,
        gateway_site: str,
        now_ms: int,
        preauth: Preauthorization | None = None,
        token: ClaimToken | None = None,
        binding: DeviceBinding | None = None,
    ) -> EnrollDecision:
        dev = req.device_id

        def refuse(reason: str) -> EnrollDecision:
            return EnrollDecision("refuse", f"device {dev!r}: {reason}", dev)

        bucket = self._buckets.setdefault(gateway_id, TokenBucket(self._rate, self._burst))
        if not bucket.take(1, now_ms / 1000):
            return refuse(f"enrollment rate limit of gateway {gateway_id!r} exceeded")
        if not dev or not req.hw or not req.serial or not _is_curve_key(req.curve_key):
            return refuse("malformed request (needs device id, hardware, serial and a 40-character Z85 key)")

        if req.claim_token is not None:
            why = _token_problem(req.claim_token, token, now_ms)
            if why or token is None:
                return refuse(why or "unknown claim token")
            site: str | None = token.site
            how, consume = f"claim token {token.token_id}", token.token_id
        else:
            known = preauth if preauth is not None and preauth.serial == req.serial else None
            if known is not None and known.device_id not in (None, dev):
                return refuse(f"serial {req.serial!r} is preauthorized for another device id")
            site = known.site if known is not None else None
            how, consume = f"serial {req.serial!r}", None

        takeover = binding is not None and binding.curve_key != bytes(req.curve_key)
        if binding is not None and takeover and not binding.reprovision:
            return refuse("is bound to another CurveZMQ key; an operator must allow re-provisioning first")
        if site is not None and site != gateway_site:
            return refuse(f"claim is for site {site!r} but gateway {gateway_id!r} is at site {gateway_site!r}")
        if site is None:
            reason = f"device {dev!r}: serial {req.serial!r} is not preauthorized; waiting for approval"
            return EnrollDecision("pending", reason, dev, site=gateway_site)

        groups: list[str] = []
        config: dict[str, Any] = {}
        for rule in self.rules:
            if rule.matches(req, site):
                groups += [g for g in rule.groups if g not in groups]
                config.update(rule.config)
        return EnrollDecision(
            "accept",
            f"device {dev!r}: enrolled at site {site!r} by {how}" + (" (re-provisioned)" if takeover else ""),
            dev,
            site=site,
            groups=tuple(groups),
            config=config,
            consume_token=consume,
            clear_reprovision=takeover,
        )


def _token_problem(text: str, token: ClaimToken | None, now_ms: int) -> str | None:
    parsed = parse_token(text, prefix=CLAIM_PREFIX)
    if parsed is None:
        return "malformed claim token"
    token_id, secret = parsed
    if token is None or token.token_id != token_id:
        return f"unknown claim token {token_id}"
    if not verify_secret(secret, token.secret_hash):
        return f"wrong secret for claim token {token_id}"
    if token.revoked:
        return f"claim token {token_id} is revoked"
    if now_ms >= token.expires_ms:
        return f"claim token {token_id} expired"
    if token.uses >= token.max_uses:
        return f"claim token {token_id} is used up ({token.uses} of {token.max_uses} uses)"
    return None


def _is_curve_key(key: bytes) -> bool:
    try:
        return isinstance(key, bytes) and len(key) == 40 and len(zmq.utils.z85.decode(key)) == 32
    except (ValueError, KeyError, IndexError):
        return False


_RULE_KEYS = {"hw_prefix", "serial_prefix", "site", "groups", "config"}


def parse_rules(tables: Sequence[Mapping[str, Any]]) -> tuple[EnrollRule, ...]:
    """Enrollment rules from the cloud's config (``enroll_rules = [{hw_prefix = "sim", groups = ["line-1"]}]``)."""
    from common.errors import ConfigError

    rules = []
    for i, t in enumerate(tables):
        where = f"enroll_rules[{i}]"
        if not isinstance(t, Mapping) or set(t) - _RULE_KEYS:
            raise ConfigError(f"{where}: expected a table with keys among {sorted(_RULE_KEYS)}, got {t!r}")
        groups, config = t.get("groups", []), t.get("config", {})
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise ConfigError(f"{where}: groups must be a list of names")
        if not isinstance(config, Mapping):
            raise ConfigError(f"{where}: config must be a table")
        for key in ("hw_prefix", "serial_prefix", "site"):
            if key in t and not isinstance(t[key], str):
                raise ConfigError(f"{where}: {key} must be a string")
        rules.append(EnrollRule(t.get("hw_prefix", ""), t.get("serial_prefix", ""), t.get("site"), tuple(groups),
                                dict(config)))
    return tuple(rules)

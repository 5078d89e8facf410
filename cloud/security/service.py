"""``SecurityService``: enrollment decisions applied, certificates issued, the revocation list kept and
signed, commands signed, and every decision written to the audit log.

Every method is blocking (it uses the security records, and the fleet's for enrollment rules) and the
time is an argument: the
cloud calls them on its store thread, tests call them directly. Decisions come
from the pure modules (``cloud.security.enrollment``, ``cloud.security.ca``, ``common.pki``, ``cloud.security.rbac``);
this class looks up their facts and records their outcome.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.security.ca import IssuingCA, issue_certificate
from cloud.security.enrollment import Enroller, claim_token_id, new_claim_token
from cloud.security.enrollment import EnrollRequest as Claim
from cloud.security.revocations import current_list
from cloud.fleet.ports import FleetRecords
from cloud.security.ports import SecurityRecords
from common.command_auth import sign_command
from common.errors import CertificateError, NotFound
from common.pki import verify_certificate
from common.protocol.messages import EnrollReply, EnrollRequest, KeyRotation
from common.revocation import RevocationList, sign_revocation_list
from common.signed import key_id_for

__all__ = ["DEFAULT_CERT_DAYS", "REVOCATION_TTL_MS", "SecurityService"]

DEFAULT_CERT_DAYS = 90
REVOCATION_TTL_MS = 7 * 24 * 3600 * 1000  # a gateway accepts a list this long after it was signed (enforces it longer)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks, for the audit log: a principal's name (or a gateway) and where the request came from."""

    who: str
    source: str = ""


class SecurityService:
    def __init__(
        self,
        records: SecurityRecords,
        fleet: FleetRecords,
        signing_key: Ed25519PrivateKey,
        *,
        ca: IssuingCA | None = None,
        enroller: Enroller | None = None,
        cert_days: float = DEFAULT_CERT_DAYS,
    ) -> None:
        self.records = records
        self.fleet = fleet  # enrollment rules put new devices in groups and give them config
        self.signing_key = signing_key
        self.key_id = key_id_for(signing_key.public_key())
        self.ca = ca
        self.enroller = enroller or Enroller()
        self.cert_lifetime = dt.timedelta(days=cert_days)
        self.revoked_api_tokens: set[str] = set()  # the API's token cache consults it (cloud.http.access)
        self._lock = threading.Lock()  # one revocation version at a time; enroll decisions in order

    # -- audit -------------------------------------------------------------------------

    def audit(self, actor: Actor, action: str, target: str, allowed: bool, detail: str, now_ms: int) -> None:
        self.records.append_audit(who=actor.who, action=action, target=target, when_ms=now_ms, source=actor.source,
                                result=allowed, detail=detail)

    # -- enrollment --------------------------------------------------------------------

    def create_claim_token(self, site: str, uses: int, expires_ms: int, now_ms: int) -> tuple[str, str]:
        """A new site claim token: (text to hand out once, token id)."""
        text, record = new_claim_token(site, uses=uses, expires_ms=expires_ms)
        self.records.save_claim_token(record, now_ms)
        return text, record.token_id

    def enroll(self, req: EnrollRequest, *, gateway_id: str, gateway_site: str, now_ms: int) -> EnrollReply:
        """Decide ``req`` (relayed by ``gateway_id``), apply it, audit it, and answer it."""
        claim = Claim(req.device_id, req.curve_key.encode(), req.hw, req.serial, req.claim_token or None)
        actor = Actor(f"gateway:{gateway_id}", gateway_site)
        too_long = [f for f in ("device_id", "hw", "serial") if len(getattr(req, f)) > 128]
        if too_long:
            return self._answer(actor, req, "refuse", f"device {req.device_id[:64]!r}: {', '.join(too_long)} longer than 128 characters", b"", now_ms)
        with self._lock:
            token_id = claim_token_id(req.claim_token) if req.claim_token else None
            decision = self.enroller.decide(
                claim, gateway_id=gateway_id, gateway_site=gateway_site, now_ms=now_ms,
                preauth=None if req.claim_token else self.records.preauthorization(req.serial),
                token=self.records.claim_token(token_id) if token_id else None,
                binding=self.records.binding(req.device_id),
            )
            if decision.outcome == "refuse":
                # over the gateway's rate limit: not a verdict on the device, which asks again later
                outcome = "retry" if "rate limit" in decision.reason else "refuse"
                return self._answer(actor, req, outcome, decision.reason, b"", now_ms)
            if decision.outcome == "pending" and self._rejected(req):
                return self._answer(actor, req, "refuse", f"device {req.device_id!r}: serial {req.serial!r} was rejected "
                                    "by an operator", b"", now_ms)
            if decision.outcome == "pending" and (held := self._pending_other(req)):
                return self._answer(actor, req, "refuse", held, b"", now_ms)  # the first claim waits for an operator
            if decision.outcome == "pending":
                self.records.enroll(device_id=req.device_id, site=gateway_site, hw=req.hw, serial=req.serial,
                                  curve_key=req.curve_key, status="pending", gateway_id=gateway_id, cert_serial=None,
                                  not_after_ms=None, groups=(), consume_token=None, now_ms=now_ms)
                return self._answer(actor, req, "pending", decision.reason, b"", now_ms)
            if self.ca is None:
                return self._answer(actor, req, "refuse", "the cloud has no CA (start it with --ca-dir)", b"", now_ms)
            if req.device_id in self.records.revocation_list()[1]:
                return self._answer(actor, req, "refuse", f"device {req.device_id!r} is revoked", b"", now_ms)
            try:
                pem, serial, not_after_ms = self.issue(req.device_id, decision.site or gateway_site, req.hw, req.curve_key, now_ms)
            except (ValueError, CertificateError) as exc:
                return self._answer(actor, req, "refuse", f"device {req.device_id!r}: no certificate: {exc}", b"", now_ms)
            ok = self.records.enroll(device_id=req.device_id, site=decision.site or gateway_site, hw=req.hw,
                                   serial=req.serial, curve_key=req.curve_key, status="enrolled", gateway_id=gateway_id,
                                   cert_serial=serial, not_after_ms=not_after_ms, groups=decision.groups,
                                   consume_token=decision.consume_token, now_ms=now_ms)
            if not ok:
                return self._answer(actor, req, "refuse", f"device {req.device_id!r}: claim token used up", b"", now_ms)
            self._apply_rules(req.device_id, decision.site or gateway_site, gateway_id, decision, now_ms)
            return self._answer(actor, req, "accept", decision.reason, pem, now_ms)

    def _pending_other(self, req: EnrollRequest) -> str:
        """Why ``req`` may not replace a pending identity of its device id (another key or serial waits for an
        operator's decision), or "" if it may."""
        row = self.records.identity(req.device_id)
        if row is None or row["status"] != "pending" or (row["curve_key"], row["serial"]) == (req.curve_key, req.serial):
            return ""
        return (f"device {req.device_id!r} is already pending with another key or serial; an operator approves or "
                "rejects that one first (`edgefleet devices pending`)")

    def _rejected(self, req: EnrollRequest) -> bool:
        row = self.records.identity(req.device_id)
        return row is not None and row["status"] == "rejected" and row["serial"] == req.serial

    def _apply_rules(self, device_id: str, site: str, gateway_id: str, decision: Any, now_ms: int) -> None:
        """What the enrollment rules gave a new device: its static groups, and its initial config as its
        device layer (``cloud.fleet.config_layers``: the config push job sends the merge to the device)."""
        if not (decision.groups or decision.config):
            return
        self.fleet.register_device(device_id, site, gateway_id, now_ms)
        if decision.groups:
            self.fleet.join_groups(device_id, decision.groups, now_ms)
        if decision.config:
            self.fleet.put_layer("device", device_id, decision.config, (), "enrollment rule", now_ms)

    def rotate(self, req: KeyRotation, *, gateway_id: str, gateway_site: str, now_ms: int) -> EnrollReply:
        """Certify a device's next key, asked on its authenticated session at its own site's gateway.

        Refused for an unknown, pending, revoked or other-site device, and for an expired certificate:
        the rule is that an expired device enrolls again with a claim, it does not rotate."""
        actor = Actor(f"gateway:{gateway_id}", gateway_site)
        dev = req.device_id

        def answer(outcome: str, detail: str, pem: bytes = b"") -> EnrollReply:
            self.audit(actor, "devices.rotate", dev, outcome == "accept", f"{outcome}: {detail}", now_ms)
            return EnrollReply(dev, req.new_curve_key, outcome, detail[:256], pem)

        with self._lock:
            row = self.records.identity(dev)
            if row is None or row["status"] != "enrolled":
                return answer("refuse", f"device {dev!r} is not enrolled; enroll it with a claim first")
            if row["site"] != gateway_site:
                return answer("refuse", f"device {dev!r} belongs to site {row['site']!r}, not {gateway_site!r}")
            if dev in self.records.revocation_list()[1]:
                return answer("refuse", f"device {dev!r} is revoked")
            if row["not_after_ms"] is not None and now_ms >= row["not_after_ms"]:
                return answer("refuse", f"device {dev!r}: certificate expired; it must enroll again with a claim")
            if self.ca is None:
                return answer("refuse", "the cloud has no CA (start it with --ca-dir)")
            try:
                pem, serial, not_after_ms = self.issue(dev, row["site"], row["hw"], req.new_curve_key, now_ms)
            except (ValueError, CertificateError) as exc:
                return answer("refuse", f"device {dev!r}: {exc}")
            self.records.enroll(device_id=dev, site=row["site"], hw=row["hw"], serial=row["serial"],
                              curve_key=req.new_curve_key, status="enrolled", gateway_id=gateway_id, cert_serial=serial,
                              not_after_ms=not_after_ms, groups=row["groups"] or (), consume_token=None, now_ms=now_ms)
            return answer("accept", f"device {dev!r}: key rotated (old key accepted until its certificate expires)", pem)

    def issue(self, device_id: str, site: str, hw: str, curve_key: str, now_ms: int) -> tuple[bytes, str, int]:
        assert self.ca is not None
        not_before = _utc(now_ms) - dt.timedelta(minutes=5)  # a little clock skew between cloud and device
        not_after = min(_utc(now_ms) + self.cert_lifetime, self.ca.cert.not_valid_after_utc)
        pem = issue_certificate(self.ca, subject_id=device_id, role="device", site=site, hw=hw,
                                curve_public_key=curve_key, not_before=max(not_before, self.ca.cert.not_valid_before_utc),
                                not_after=not_after)
        ident = verify_certificate(pem, self.ca.chain, now=_utc(now_ms), expected_curve_key=curve_key)
        return pem, f"{ident.serial:x}", int(not_after.timestamp() * 1000)

    def _answer(self, actor: Actor, req: EnrollRequest, outcome: str, detail: str, pem: bytes, now_ms: int) -> EnrollReply:
        self.audit(actor, "devices.enroll", req.device_id, outcome == "accept", f"{outcome}: {detail}", now_ms)
        return EnrollReply(req.device_id, req.curve_key, outcome, detail[:256], pem)

    def approve(self, device_id: str, now_ms: int) -> dict[str, Any]:
        """Approve a pending (or rejected) device: preauthorize its serial for its site, so its next attempt is
        accepted."""
        row = self.records.identity(device_id)
        if row is None or row["status"] not in ("pending", "rejected"):
            raise NotFound(f"No pending device by the id of {device_id!r} (`edgefleet devices pending` lists them)")
        self.records.preauthorize(row["serial"], row["site"], device_id, now_ms)
        self.records.set_identity_status(device_id, "pending", ("rejected",))
        return {"device_id": device_id, "serial": row["serial"], "site": row["site"]}

    def reject(self, device_id: str, now_ms: int) -> dict[str, Any]:
        """Reject a pending device: its identity is marked ``rejected`` and its serial is refused (not queued
        again) until an operator approves it."""
        row = self.records.identity(device_id)
        if row is None or not self.records.set_identity_status(device_id, "rejected", ("pending",)):
            raise NotFound(f"No pending device by the id of {device_id!r} (`edgefleet devices pending` lists them)")
        return {"device_id": device_id, "serial": row["serial"], "site": row["site"]}

    def check_certificate(self, pem: bytes, curve_key: str, now_ms: int):
        """The identity ``pem`` proves for a peer connected with ``curve_key``, against revocations too."""
        if self.ca is None:
            raise CertificateError("<any>", "the cloud has no CA (start it with --ca-dir)")
        _, revoked, _ = self.records.revocation_list()
        return verify_certificate(pem, self.ca.chain, now=_utc(now_ms), expected_curve_key=curve_key,
                                  revoked_subjects=revoked)

    def verify_gateway(self, pem: bytes, *, curve_key: str, gateway_id: str, site: str, now_ms: int) -> str:
        """"" if ``pem`` certifies ``gateway_id`` at ``site`` for the key it connected with; else why not (audited)."""
        actor = Actor(f"gateway:{gateway_id}", site)
        try:
            ident = self.check_certificate(pem, curve_key, now_ms)
            if (ident.role, ident.subject_id, ident.site) != ("gateway", gateway_id, site):
                raise CertificateError(ident.subject_id, f"certifies {ident.role} {ident.subject_id!r} at site "
                                                         f"{ident.site!r}, not gateway {gateway_id!r} at {site!r}")
        except CertificateError as exc:
            self.audit(actor, "gateways.certificate", gateway_id, False, str(exc), now_ms)
            return str(exc)
        return ""

    def renew_gateway(self, pem: bytes, *, curve_key: str, gateway_id: str, site: str, now_ms: int) -> bytes:
        """A fresh certificate for the same key and the same lifetime when ``pem`` (already verified) is past
        2/3 of its life, else b"": gateways renew at every session start and on their own schedule, long
        before expiry, with no operator action; the old one stays valid until it expires (the overlap)."""
        ident = self.check_certificate(pem, curve_key, now_ms)
        life = ident.not_after - ident.not_before
        if _utc(now_ms) < ident.not_before + life * 2 / 3:
            return b""
        fresh = self.issue_gateway(gateway_id, site, curve_key, now_ms, days=max(life.total_seconds() / 86_400, 1.0))
        self.audit(Actor(f"gateway:{gateway_id}", site), "gateways.certificate.renew", gateway_id, True,
                   f"certificate serial {ident.serial} renewed before it expires at {ident.not_after.isoformat()}", now_ms)
        return fresh

    def issue_gateway(self, gateway_id: str, site: str, curve_key: str, now_ms: int, days: float = 365) -> bytes:
        assert self.ca is not None
        not_after = min(_utc(now_ms) + dt.timedelta(days=days), self.ca.cert.not_valid_after_utc)
        return issue_certificate(self.ca, subject_id=gateway_id, role="gateway", site=site, hw="gateway",
                                 curve_public_key=curve_key, not_before=max(_utc(now_ms) - dt.timedelta(minutes=5),
                                                                             self.ca.cert.not_valid_before_utc),
                                 not_after=not_after)

    # -- revocation --------------------------------------------------------------------

    def change_revocations(self, device_id: str, change: str, reason: str, now_ms: int) -> tuple[RevocationList, bytes]:
        """``change`` is "revoke", "quarantine" or "reinstate"; the next version, saved and signed."""
        with self._lock:
            rl = current_list(self.records)
            if change == "revoke":
                rl = rl.with_revoked(device_id, reason or "revoked by an operator")
            elif change == "quarantine":
                rl = rl.with_quarantined(device_id, reason or "quarantined by an operator")
            elif change == "reinstate":
                rl = rl.without(device_id)
            else:
                raise ValueError(f"unknown revocation change {change!r}")
            self.records.save_revocation_list(rl.version, dict(rl.revoked), dict(rl.quarantined), now_ms)
            return rl, self.sign_revocations(rl, now_ms)

    def revoke_retired(self, row: Mapping[str, Any], now_ms: int) -> bytes:
        """A ``cloud.fleet.lifecycle.ON_RETIRE`` hook's work: a retired device's credentials are revoked, audited;
        returns the signed list for the gateways."""
        reason = f"retired by {row['by']}: {row['reason']}"[:200]
        _, blob = self.change_revocations(row["device_id"], "revoke", reason, now_ms)
        self.audit(Actor(str(row["by"]), "lifecycle"), "devices.revoke", row["device_id"], True, reason, now_ms)
        return blob

    def sign_revocations(self, rl: RevocationList | None, now_ms: int) -> bytes:
        rl = current_list(self.records) if rl is None else rl
        return sign_revocation_list(rl, issued_ms=now_ms, expires_ms=now_ms + REVOCATION_TTL_MS,
                                    key=self.signing_key, key_id=self.key_id)

    # -- commands ----------------------------------------------------------------------

    def sign_command(self, row: Mapping[str, Any]) -> bytes:
        return sign_command(row["device_id"], row["seq"], row["name"], dict(row["args"] or {}),
                            issued_ms=row["created_ms"], expires_ms=row["expires_ms"], key=self.signing_key)

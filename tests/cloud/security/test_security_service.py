"""The security service against a real store: bad input is refused with a reason naming the device and an
audit entry, good input leaves a certificate that binds the key the device connected with."""

from __future__ import annotations

import datetime as dt

import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.security.audit import verify_chain
from cloud.security.ca import init_ca
from cloud.security.service import SecurityService
from cloud.store import Store
from common.errors import CertificateError
from common.pki import verify_certificate
from common.protocol.messages import EnrollRequest, KeyRotation
from common.revocation import RevocationCache
from common.signed import EnvelopeVerifier

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
NOW = int(T0.timestamp() * 1000)


def key() -> str:
    return zmq.curve_keypair()[0].decode()


@pytest.fixture
def store(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
    yield store
    store.close()


@pytest.fixture
def service(tmp_path, store):
    ca = init_ca(tmp_path / "ca", b"passphrase", now=T0 - dt.timedelta(days=1))
    return SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate(), ca=ca, cert_days=30)


def enroll(service, device="dev-1", k=None, token="", serial="SN-1", site="site-1", now=NOW):
    req = EnrollRequest(device, k or key(), "sim-board-1", serial, token)
    return req, service.enroll(req, gateway_id="gw-1", gateway_site=site, now_ms=now)


def last_audit(service):
    records = service.records.audit_records()
    verify_chain(records)
    return records[-1]


def test_a_claim_token_enrolls_until_used_up_and_the_certificate_binds_the_key(service) -> None:
    token, _ = service.create_claim_token("site-1", 1, NOW + 3_600_000, NOW)
    req, reply = enroll(service, token=token)
    assert reply.outcome == "accept"
    ident = verify_certificate(reply.certificate, service.ca.chain, now=T0, expected_curve_key=req.curve_key)
    assert (ident.subject_id, ident.site, ident.role) == ("dev-1", "site-1", "device")
    assert last_audit(service).result == "allowed"
    _, reply = enroll(service, device="dev-2", token=token)
    assert reply.outcome == "refuse" and "used up" in reply.detail and "dev-2" in reply.detail
    rec = last_audit(service)
    assert (rec.who, rec.action, rec.target, rec.result) == ("gateway:gw-1", "devices.enroll", "dev-2", "refused")


@pytest.mark.parametrize(
    ("token_of", "site", "now", "why"),
    [
        (lambda t: t[:-3] + "xyz", "site-1", NOW, "wrong secret"),
        (lambda t: "ect_0123456789abcdef_nope", "site-1", NOW, "unknown claim token"),
        (lambda t: "not-a-token", "site-1", NOW, "malformed claim token"),
        (lambda t: t, "site-1", NOW + 7_200_000, "expired"),
        (lambda t: t, "site-2", NOW, "is at site 'site-2'"),
    ],
    ids=["wrong-secret", "unknown", "malformed", "expired", "other-site"],
)
def test_bad_claims_are_refused_and_audited(service, token_of, site, now, why) -> None:
    token, _ = service.create_claim_token("site-1", 5, NOW + 3_600_000, NOW)
    _, reply = enroll(service, token=token_of(token), site=site, now=now)
    assert reply.outcome == "refuse" and why in reply.detail and reply.certificate == b""
    rec = last_audit(service)
    assert rec.result == "refused" and why in rec.detail


def test_an_unknown_serial_waits_for_approval_and_a_second_key_cannot_take_over(service) -> None:
    k = key()
    _, reply = enroll(service, k=k, serial="SN-77")
    assert reply.outcome == "pending"
    service.approve("dev-1", NOW)
    _, reply = enroll(service, k=k, serial="SN-77")
    assert reply.outcome == "accept"
    _, reply = enroll(service, serial="SN-77")  # same id and serial, another key
    assert reply.outcome == "refuse" and "bound to another CurveZMQ key" in reply.detail
    assert last_audit(service).result == "refused"


def test_certificates_expired_revoked_or_for_another_key_are_refused(service) -> None:
    token, _ = service.create_claim_token("site-1", 5, NOW + 3_600_000, NOW)
    req, reply = enroll(service, token=token)
    with pytest.raises(CertificateError, match="CurveZMQ key mismatch"):
        service.check_certificate(reply.certificate, key(), NOW)
    with pytest.raises(CertificateError, match="expired"):
        service.check_certificate(reply.certificate, req.curve_key, NOW + 31 * 86_400_000)
    service.change_revocations("dev-1", "revoke", "stolen", NOW)
    with pytest.raises(CertificateError, match="revoked"):
        service.check_certificate(reply.certificate, req.curve_key, NOW)


def test_rotation_certifies_a_new_key_but_not_for_an_expired_or_revoked_device(service) -> None:
    token, _ = service.create_claim_token("site-1", 5, NOW + 3_600_000, NOW)
    enroll(service, token=token)
    new = key()
    reply = service.rotate(KeyRotation("dev-1", new), gateway_id="gw-1", gateway_site="site-1", now_ms=NOW + 1000)
    assert reply.outcome == "accept" and service.records.identity("dev-1")["curve_key"] == new
    late = NOW + 31 * 86_400_000
    reply = service.rotate(KeyRotation("dev-1", key()), gateway_id="gw-1", gateway_site="site-1", now_ms=late)
    assert reply.outcome == "refuse" and "must enroll again" in reply.detail
    reply = service.rotate(KeyRotation("dev-1", key()), gateway_id="gw-9", gateway_site="site-2", now_ms=NOW)
    assert reply.outcome == "refuse" and "belongs to site 'site-1'" in reply.detail
    service.change_revocations("dev-1", "revoke", "", NOW)
    reply = service.rotate(KeyRotation("dev-1", key()), gateway_id="gw-1", gateway_site="site-1", now_ms=NOW)
    assert reply.outcome == "refuse" and "revoked" in reply.detail
    assert [r.action for r in service.records.audit_records()].count("devices.rotate") == 4


def test_revocation_lists_are_versioned_signed_and_verify_at_a_gateway(service, tmp_path) -> None:
    rl, blob = service.change_revocations("dev-1", "revoke", "stolen", NOW)
    rl2, blob2 = service.change_revocations("dev-2", "quarantine", "", NOW)
    assert (rl.version, rl2.version) == (1, 2)
    public = service.signing_key.public_key()
    cache = RevocationCache(tmp_path / "cache", EnvelopeVerifier({service.key_id: public}))
    assert cache.update(blob2, now_ms=NOW) and cache.is_revoked("dev-1") and cache.is_quarantined("dev-2")
    with pytest.raises(Exception, match="older"):
        cache.update(blob, now_ms=NOW)  # a gateway cannot be rolled back to an older list


def test_enrollment_rules_from_the_config_give_groups_and_bad_ones_are_refused_at_start(tmp_path) -> None:
    from cloud.security.enrollment import Enroller, parse_rules
    from common.errors import ConfigError

    rules = parse_rules([{"hw_prefix": "sim-", "groups": ["line-1"], "config": {"rate": "1s"}},
                         {"site": "site-2", "groups": ["south"]}])
    store = Store.open(f"sqlite:///{tmp_path / 'rules.db'}")
    ca = init_ca(tmp_path / "ca", b"passphrase", now=T0 - dt.timedelta(days=1))
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate(), ca=ca, enroller=Enroller(rules))
    token, _ = service.create_claim_token("site-1", 5, NOW + 3_600_000, NOW)
    store.telemetry.touch_gateway("gw-1", "site-1", NOW)  # the gateway that relays the enrollment is connected
    _, reply = enroll(service, token=token)
    assert reply.outcome == "accept" and store.security.identity("dev-1")["groups"] == ["line-1"]
    # the rules took effect in the fleet: a static group (made for it) and the device's config layer
    assert {g["name"]: g["kind"] for g in store.fleet.list_groups()} == {"line-1": "static"}
    assert store.fleet.change_members("line-1") == ["dev-1"]
    (layer,) = [lay for lay in store.fleet.layers() if (lay["kind"], lay["name"]) == ("device", "dev-1")]
    assert layer["values"] == {"rate": "1s"} and layer["updated_by"] == "enrollment rule"
    store.close()
    with pytest.raises(ConfigError, match=r"enroll_rules\[0\]"):
        parse_rules([{"hw": "typo"}])


def test_a_gateway_over_its_enrollment_rate_is_told_to_retry_and_it_is_audited(tmp_path) -> None:
    from cloud.security.enrollment import Enroller

    store = Store.open(f"sqlite:///{tmp_path / 'rate.db'}")
    service = SecurityService(store.security, store.fleet, Ed25519PrivateKey.generate(), enroller=Enroller(rate_per_s=0.001, burst=2))
    outcomes = [enroll(service, device=f"dev-{i}", serial=f"SN-{i}")[1].outcome for i in range(4)]
    assert outcomes == ["pending", "pending", "retry", "retry"]
    assert "rate limit" in store.security.audit_records()[-1].detail
    store.close()


def test_a_gateway_certificate_must_name_its_id_site_and_key(service) -> None:
    k = key()
    pem = service.issue_gateway("gw-1", "site-1", k, NOW)
    assert service.verify_gateway(pem, curve_key=k, gateway_id="gw-1", site="site-1", now_ms=NOW) == ""
    assert "not gateway 'gw-1' at 'site-2'" in service.verify_gateway(pem, curve_key=k, gateway_id="gw-1", site="site-2", now_ms=NOW)
    assert "key mismatch" in service.verify_gateway(pem, curve_key=key(), gateway_id="gw-1", site="site-1", now_ms=NOW)
    assert [r.action for r in service.records.audit_records()] == ["gateways.certificate"] * 2


def test_an_oversized_request_is_refused_not_stored(service) -> None:
    token, _ = service.create_claim_token("site-1", 5, NOW + 3_600_000, NOW)
    _, reply = enroll(service, device="d" * 200, token=token)
    assert reply.outcome == "refuse" and "longer than 128" in reply.detail
    assert service.records.list_identities() == [] and last_audit(service).result == "refused"


def test_retiring_a_device_revokes_its_credentials_and_audits_it(service, store):
    from cloud.fleet import lifecycle
    from common.protocol import ForwardRecord

    store.telemetry.ingest("gw-1", "site-1", [ForwardRecord("dev-9", "bulk", 1, NOW, "metrics", {})], NOW)
    blobs = []
    lifecycle.ON_RETIRE.append(hook := lambda row: blobs.append(service.revoke_retired(row, NOW + 2)))
    try:
        lifecycle.set_state(store.fleet, "dev-9", "retired", "alice", "scrapped", NOW + 1)
    finally:
        lifecycle.ON_RETIRE.remove(hook)
    (blob,) = blobs
    _, revoked, _ = service.records.revocation_list()
    assert "retired by alice: scrapped" in revoked["dev-9"]
    assert b"dev-9" in blob  # the signed list the gateways get names it
    (rec,) = [r for r in service.records.audit_records() if r.action == "devices.revoke"]
    assert (rec.who, rec.target, rec.result) == ("alice", "dev-9", "allowed") and "scrapped" in rec.detail


def test_a_command_a_device_refused_is_reported_once_for_the_audit_log(store):
    from common.protocol import ForwardRecord

    store.telemetry.ingest("gw-1", "site-1", [ForwardRecord("dev-7", "bulk", 1, NOW, "metrics", {})], NOW)
    seq = store.commands.create_command("dev-7", "reboot", {}, NOW + 60_000, NOW)
    report = ForwardRecord("dev-7", "critical", 0, NOW + 1, "command",
                           {"seq": seq, "status": "failed", "detail": "refused: signature by an unknown key"})
    first = store.telemetry.ingest("gw-1", "site-1", [report], NOW + 2)
    assert first.refused_commands == (("dev-7", seq, "refused: signature by an unknown key"),)
    assert store.telemetry.ingest("gw-1", "site-1", [report], NOW + 3).refused_commands == ()  # a resend: nothing new


def test_a_refused_command_the_cloud_never_sent_is_reported_as_such(store):
    from common.protocol import ForwardRecord

    store.telemetry.ingest("gw-1", "site-1", [ForwardRecord("dev-8", "bulk", 1, NOW, "metrics", {})], NOW)
    report = ForwardRecord("dev-8", "critical", 0, NOW + 1, "command",
                           {"seq": 77, "status": "failed", "detail": "refused: no cloud signature"})
    result = store.telemetry.ingest("gw-1", "site-1", [report], NOW + 2)
    ((device, seq, why),) = result.refused_commands
    assert (device, seq) == ("dev-8", 77) and why.startswith("never sent by the cloud")


def test_a_gateway_certificate_is_renewed_for_the_same_key_past_two_thirds_of_its_life(service) -> None:
    k = key()
    pem = service.issue_gateway("gw-1", "site-1", k, NOW, days=30)
    early = NOW + 10 * 86_400_000
    assert service.renew_gateway(pem, curve_key=k, gateway_id="gw-1", site="site-1", now_ms=early) == b""
    late = NOW + 21 * 86_400_000  # 70% of its life
    fresh = service.renew_gateway(pem, curve_key=k, gateway_id="gw-1", site="site-1", now_ms=late)
    ident = verify_certificate(fresh, service.ca.chain, now=T0 + dt.timedelta(days=21), expected_curve_key=k)
    assert (ident.role, ident.subject_id, ident.site) == ("gateway", "gw-1", "site-1")
    assert ident.not_after >= T0 + dt.timedelta(days=50)  # a full new lifetime, from now
    assert service.verify_gateway(pem, curve_key=k, gateway_id="gw-1", site="site-1", now_ms=late) == ""  # the overlap
    assert service.records.audit_records()[-1].action == "gateways.certificate.renew"


def test_a_pending_identity_is_not_replaced_by_another_key_until_an_operator_decides(service, store) -> None:
    k = key()
    _, reply = enroll(service, k=k, serial="SN-88")
    assert reply.outcome == "pending"
    _, reply = enroll(service, serial="SN-evil")  # an anonymous peer claims the same id with its own key and serial
    assert reply.outcome == "refuse" and "already pending" in reply.detail
    row = store.security.identity("dev-1")
    assert (row["status"], row["curve_key"], row["serial"]) == ("pending", k, "SN-88")
    _, reply = enroll(service, k=k, serial="SN-88")  # the first claimant asking again still waits
    assert reply.outcome == "pending"

"""The gateway's ZAP policies: allowlisted keys, minus revoked devices and expired certificates."""

import zmq

import gateway.admission
from common.keys import Allowlist
from gateway.admission import CertExpiry, DeviceAdmission, OpenEnrollment


def test_public_names() -> None:
    assert set(gateway.admission.__all__) == {"CertExpiry", "DeviceAdmission", "OpenEnrollment"}


def test_a_key_is_refused_once_its_device_is_revoked_or_its_certificate_expired(tmp_path) -> None:
    allow = Allowlist(tmp_path / "allowed_devices")
    old, new, manual = (zmq.curve_keypair()[0] for _ in range(3))
    allow.add(old, "dev-1")
    allow.add(new, "dev-1")  # rotated: both admitted during the overlap
    allow.add(manual, "legacy")  # admitted by hand, no certificate: no expiry
    expiry = CertExpiry(tmp_path / "admitted.json")
    expiry.record(old, 1_000)
    expiry.record(new, 5_000)
    now = [500]
    revoked: set[str] = set()
    adm = DeviceAdmission(allow, lambda: revoked, CertExpiry(tmp_path / "admitted.json").load(), lambda: now[0])
    assert all(adm.decide(k)[0] for k in (old, new, manual))
    now[0] = 1_000  # the old certificate expired: only the new key is accepted
    assert adm.decide(old) == (False, "certificate of 'dev-1' for this key expired: enroll again")
    assert adm.decide(new)[0] and adm.decide(manual)[0]
    revoked.add("dev-1")
    assert adm.decide(new) == (False, "device 'dev-1' is revoked")
    assert adm.revoked_keys() == {old, new}
    assert not adm.decide(zmq.curve_keypair()[0])[0]  # unknown
    assert (adm.refused_expired, adm.refused_revoked) == (1, 1)
    enroll = OpenEnrollment(adm.revoked_keys)
    assert enroll.callback("enroll", zmq.curve_keypair()[0]) and not enroll.callback("enroll", new)

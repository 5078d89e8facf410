"""The revocation list: signed by the cloud, cached by the gateway, held through outages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import common.revocation
from common.errors import ExpiredError, MisdirectedError, ProtocolError, ReplayError, SignatureError
from common.revocation import FLEET_AUDIENCE, KIND, RevocationCache, RevocationList, sign_revocation_list
from common.signed import EnvelopeVerifier, canonical_json, key_id_for, sign_envelope

CLOUD = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
CLOUD_ID = key_id_for(CLOUD.public_key())
T0 = 1_900_000_000_000
DAY = 86_400_000


def signed(rl: RevocationList, *, issued_ms: int = T0, key: Ed25519PrivateKey = CLOUD, **kw) -> bytes:
    return sign_revocation_list(rl, issued_ms=issued_ms, expires_ms=issued_ms + 7 * DAY, key=key, key_id=CLOUD_ID, **kw)


def raw_envelope(kind: str, body: dict, seq: int) -> bytes:
    return sign_envelope(
        kind, body, seq=seq, issued_ms=T0, expires_ms=T0 + DAY, audience=FLEET_AUDIENCE, key=CLOUD, key_id=CLOUD_ID
    )


def cache(path: Path) -> RevocationCache:
    return RevocationCache(path, EnvelopeVerifier({CLOUD_ID: CLOUD.public_key()}))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "revocations.json"


V1 = RevocationList(0).with_revoked("dev-1", "stolen")
V2 = V1.with_quarantined("dev-2", "malware scan")
V3 = V2.with_revoked("dev-2", "confirmed compromise")


def test_all() -> None:
    assert sorted(common.revocation.__all__) == [
        "FLEET_AUDIENCE",
        "KIND",
        "RevocationCache",
        "RevocationList",
        "sign_revocation_list",
    ]


def test_each_change_is_the_next_version() -> None:
    assert (V1.version, dict(V1.revoked), dict(V1.quarantined)) == (1, {"dev-1": "stolen"}, {})
    assert (V2.version, dict(V2.quarantined)) == (2, {"dev-2": "malware scan"})
    assert (V3.version, dict(V3.revoked), dict(V3.quarantined)) == (
        3,
        {"dev-1": "stolen", "dev-2": "confirmed compromise"},
        {},
    )
    v4 = V3.without("dev-1")
    assert (v4.version, sorted(v4.revoked)) == (4, ["dev-2"])
    with pytest.raises(TypeError):
        V1.revoked["dev-9"] = "x"  # type: ignore[index]


def test_a_verified_list_takes_effect_and_is_on_disk(path: Path) -> None:
    c = cache(path)
    assert c.load().version == 0 and not c.is_revoked("dev-1")  # nothing cached yet
    assert c.update(signed(V2), now_ms=T0) is True
    assert c.is_revoked("dev-1") and not c.is_quarantined("dev-1")
    assert c.is_quarantined("dev-2") and not c.is_revoked("dev-2")
    assert c.reason("dev-2") == "malware scan" and c.reason("dev-3") is None
    assert not c.is_revoked("dev-3") and not c.is_quarantined("dev-3")
    assert path.read_bytes() == signed(V2)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_it_never_goes_back_to_an_older_version(path: Path) -> None:
    c = cache(path)
    c.update(signed(V3), now_ms=T0)
    on_disk = path.read_bytes()
    with pytest.raises(ReplayError, match=r"revocations envelope for 'fleet' seq 2: version 2 is older than .* 3"):
        c.update(signed(V2), now_ms=T0)
    assert c.version == 3 and c.is_revoked("dev-2")
    assert path.read_bytes() == on_disk


def test_the_same_version_again_is_a_no_op_but_other_content_is_not(path: Path) -> None:
    c = cache(path)
    c.update(signed(V2), now_ms=T0)
    assert c.update(signed(V2, issued_ms=T0 + 1), now_ms=T0 + 2) is False  # re-sent on reconnect
    other = RevocationList(2, {"dev-7": "x"})
    with pytest.raises(ReplayError, match="cached version but with other content"):
        c.update(signed(other), now_ms=T0)
    assert not c.is_revoked("dev-7")


def test_it_holds_through_a_restart_and_an_outage(path: Path) -> None:
    cache(path).update(signed(V3), now_ms=T0)
    # the gateway restarts while the cloud is unreachable, for a month
    later = T0 + 30 * DAY
    c = cache(path)
    assert c.version == 0  # the constructor reads nothing
    c.load()
    assert c.version == 3
    assert c.is_revoked("dev-1") and c.is_revoked("dev-2")
    assert c.stale(later) and not c.stale(T0 + DAY)
    # and it still refuses to go back after the restart
    with pytest.raises(ReplayError):
        c.update(signed(V2, issued_ms=later), now_ms=later)


def test_a_forged_or_edited_list_is_refused(path: Path) -> None:
    c = cache(path)
    c.update(signed(V1), now_ms=T0)
    forged = signed(V1.without("dev-1"), key=Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError, match="bad signature"):
        c.update(forged, now_ms=T0)
    outer = json.loads(signed(V1.with_quarantined("dev-5", "x")))
    outer["signed"]["body"]["revoked"] = {}  # a gateway un-revoking dev-1 in transit
    with pytest.raises(SignatureError):
        c.update(canonical_json(outer), now_ms=T0)
    assert c.version == 1 and c.is_revoked("dev-1")


def test_an_expired_misdirected_or_malformed_list_is_refused(path: Path) -> None:
    c = cache(path)
    with pytest.raises(ExpiredError):
        c.update(signed(V1), now_ms=T0 + 8 * DAY)
    with pytest.raises(MisdirectedError, match="addressed to 'site:plant-7'"):
        c.update(signed(V1, audience="site:plant-7"), now_ms=T0)
    with pytest.raises(MisdirectedError, match="expected a 'revocations' envelope"):
        c.update(raw_envelope("command", V1.to_body(), 1), now_ms=T0)
    with pytest.raises(ProtocolError, match="malformed body"):  # version 1 in an envelope of seq 5
        c.update(raw_envelope(KIND, V1.to_body(), 5), now_ms=T0)
    with pytest.raises(ProtocolError, match="map of id to reason"):
        c.update(raw_envelope(KIND, {"version": 1, "revoked": {"dev-1": 3}, "quarantined": {}}, 1), now_ms=T0)
    assert c.version == 0 and not path.exists()


def test_a_corrupt_cache_file_fails_closed(path: Path) -> None:
    cache(path).update(signed(V1), now_ms=T0)
    data = bytearray(path.read_bytes())
    data[data.index(b"stolen")] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SignatureError):
        cache(path).load()
    path.write_bytes(b"")
    with pytest.raises(SignatureError):
        cache(path).load()


def test_a_site_scoped_cache_accepts_its_site_and_the_fleet(path: Path) -> None:
    c = RevocationCache(
        path, EnvelopeVerifier({CLOUD_ID: CLOUD.public_key()}), audience=[FLEET_AUDIENCE, "site:plant-7"]
    )
    assert c.update(signed(V1, audience="site:plant-7"), now_ms=T0)
    assert c.update(signed(V2), now_ms=T0)
    with pytest.raises(MisdirectedError):
        c.update(signed(V3, audience="site:plant-8"), now_ms=T0)


def test_revoked_wins_over_quarantined(path: Path) -> None:
    # a list the cloud's helpers never build, handled safely all the same
    both = RevocationList(9, {"dev-1": "revoked"}, {"dev-1": "quarantined"})
    c = cache(path)
    c.update(signed(both), now_ms=T0)
    assert c.is_revoked("dev-1") and not c.is_quarantined("dev-1")
    assert c.reason("dev-1") == "revoked"


def test_the_same_list_signed_by_a_replacement_key_is_kept_so_the_cache_survives_dropping_the_old_key(tmp_path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from common.revocation import RevocationCache, RevocationList, sign_revocation_list
    from common.signed import EnvelopeVerifier, key_id_for

    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ids = {key_id_for(k.public_key()): k.public_key() for k in (old, new)}
    rl = RevocationList(1, {"dev-1": "stolen"})
    cache = RevocationCache(tmp_path / "rl", EnvelopeVerifier(ids))
    for key in (old, new):
        blob = sign_revocation_list(rl, issued_ms=0, expires_ms=10_000, key=key, key_id=key_id_for(key.public_key()))
        cache.update(blob, now_ms=1)
    only_new = RevocationCache(tmp_path / "rl", EnvelopeVerifier({key_id_for(new.public_key()): new.public_key()}))
    assert only_new.load().revoked == {"dev-1": "stolen"}

"""Firmware manifests: build, sign, verify (and every way verification must fail), chunks, release keys and CLI."""

import base64
import hashlib
import json
import os
import stat

import pytest
from click.testing import CliRunner

from common.cli import main
from common.errors import ChunkError, ImageError, KeyFileError, ManifestError
from common.firmware import (
    Allowance,
    DeltaInfo,
    Manifest,
    SignedAllowance,
    SignedManifest,
    build_manifest,
    chunk_range,
    generate_release_key,
    key_id,
    load_public_key,
    load_release_key,
    save_release_key,
    sign_allowance,
    sign_manifest,
    verify_allowance,
    verify_chunk,
    verify_image,
    verify_manifest,
)

NOW = 1_800_000_000_000
CHUNK = 4096


@pytest.fixture(scope="module")
def key():
    return generate_release_key()


@pytest.fixture(scope="module")
def other_key():
    return generate_release_key()


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "fw.img"
    p.write_bytes(os.urandom(3 * CHUNK + 100))
    return p


@pytest.fixture
def manifest(image):
    return build_manifest(
        str(image),
        "1.10.0",
        ["gw-x1", "gw-x2"],
        security_version=5,
        expires_ms=NOW + 86_400_000,
        issued_ms=NOW - 1000,
        min_version="1.8.0",
        deltas=[DeltaInfo("1.9.2", "bsdiff4-blocks", 1234, "ab" * 32)],
        chunk_size=CHUNK,
    )


def trusted(*keys):
    return {key_id(k.public_key()): k.public_key() for k in keys}


def verify(signed, keys, **kw):
    args = {"hw": "gw-x1", "now_ms": NOW, "security_floor": 5}
    args.update(kw)
    return verify_manifest(signed, keys, **args)


def test_build_hashes_the_image_in_chunks(image, manifest):
    data = image.read_bytes()
    assert manifest.size == len(data) and manifest.sha256 == hashlib.sha256(data).hexdigest()
    assert len(manifest.chunks) == 4
    assert manifest.chunks[3] == hashlib.sha256(data[3 * CHUNK :]).hexdigest()
    assert chunk_range(manifest, 3) == (3 * CHUNK, 100)


def test_round_trip_and_verify(manifest, key):
    signed = sign_manifest(manifest, key)
    wire = signed.to_bytes()
    assert SignedManifest.from_bytes(wire) == signed
    assert Manifest.from_dict(json.loads(manifest.to_bytes())) == manifest
    assert verify(wire, trusted(key)) == manifest
    assert verify(signed, trusted(key)).delta_from("1.9.2.0").size == 1234


def _fail(signed, keys, reason, **kw):
    with pytest.raises(ManifestError) as e:
        verify(signed, keys, **kw)
    assert e.value.reason == reason, str(e.value)
    assert str(e.value).startswith("firmware manifest 1.10.0:"), str(e.value)
    return e.value


def test_tampered_body_is_rejected(manifest, key):
    signed = sign_manifest(manifest, key)
    body = signed.body.replace(b'"security_version":5', b'"security_version":9')
    assert body != signed.body
    _fail(SignedManifest(body, signed.signatures), trusted(key), "bad-signature")


def test_tampered_signature_is_rejected(manifest, key):
    signed = sign_manifest(manifest, key)
    kid, sig = signed.signatures[0]
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    _fail(SignedManifest(signed.body, [(kid, bad)]), trusted(key), "bad-signature")


def test_unknown_key_unsigned_and_threshold(manifest, key, other_key):
    signed = sign_manifest(manifest, other_key)
    err = _fail(signed, trusted(key), "unknown-key")
    assert key_id(other_key.public_key()) in str(err)
    _fail(SignedManifest(signed.body, []), trusted(key), "unsigned")
    both = sign_manifest(sign_manifest(manifest, key), other_key)
    assert len(both.signatures) == 2
    assert verify(both, trusted(key, other_key), threshold=2) == manifest
    _fail(sign_manifest(manifest, key), trusted(key, other_key), "unknown-key", threshold=2)


def test_expired_wrong_hardware_below_floor(manifest, key):
    signed = sign_manifest(manifest, key)
    _fail(signed, trusted(key), "expired", now_ms=manifest.expires_ms)
    err = _fail(signed, trusted(key), "wrong-hardware", hw="gw-z9")
    assert "'gw-z9'" in str(err)
    _fail(signed, trusted(key), "below-floor", security_floor=6)


def test_min_version_and_downgrade_allowance(manifest, key, other_key):
    signed = sign_manifest(manifest, key)
    assert verify(signed, trusted(key), current_version="1.9.2") == manifest
    _fail(signed, trusted(key), "below-min-version", current_version="1.7.9")
    _fail(signed, trusted(key), "downgrade", current_version="1.11.0")
    ok = sign_allowance(Allowance("dev-7", "1.10.0", NOW + 1000), key)
    assert verify(signed, trusted(key), current_version="1.11.0", device_id="dev-7", allowance=ok) == manifest
    by_hw = sign_allowance(Allowance("gw-x1", "1.10", NOW + 1000), key)
    assert verify(signed, trusted(key), current_version="1.11.0", allowance=by_hw) == manifest
    for bad in (
        sign_allowance(Allowance("dev-8", "1.10.0", NOW + 1000), key),  # another device
        sign_allowance(Allowance("dev-7", "1.9.0", NOW + 1000), key),  # another version
        sign_allowance(Allowance("dev-7", "1.10.0", NOW), key),  # expired
        sign_allowance(Allowance("dev-7", "1.10.0", NOW + 1000), other_key),  # untrusted signer
    ):
        _fail(signed, trusted(key), "downgrade", current_version="1.11.0", device_id="dev-7", allowance=bad)
    assert verify_allowance(ok, trusted(key), now_ms=NOW).target == "dev-7"


def test_manifest_signature_cannot_pass_as_allowance(manifest, key):
    # domain separation: a manifest signature over the same bytes does not verify as an allowance
    body = Allowance("dev-7", "1.10.0", NOW + 1000).to_bytes()
    forged = SignedManifest(body, [(key_id(key.public_key()), key.sign(b"edgefleet-firmware-manifest-v1\x00" + body))])
    with pytest.raises(ManifestError) as e:
        verify_allowance(SignedAllowance(forged.body, forged.signatures), trusted(key), now_ms=NOW)
    assert e.value.reason == "bad-signature"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("chunks"),
        lambda d: d.update(size=d["size"] + 10 * CHUNK),  # chunk count no longer matches
        lambda d: d.update(sha256="XYZ"),
        lambda d: d.update(hw=[]),
        lambda d: d.update(security_version=True),
        lambda d: d.update(version="1.x"),
        lambda d: d.update(extra=1),
        lambda d: d["deltas"].append({"from_version": "1.0", "method": "m", "size": -1, "sha256": "00" * 32}),
    ],
)
def test_malformed_but_signed_body_is_rejected(manifest, key, mutate):
    d = json.loads(manifest.to_bytes())
    mutate(d)
    body = json.dumps(d).encode()
    signed = SignedManifest(body, [(key_id(key.public_key()), key.sign(b"edgefleet-firmware-manifest-v1\x00" + body))])
    with pytest.raises(ManifestError) as e:
        verify(signed, trusted(key))
    assert e.value.reason == "malformed"


@pytest.mark.parametrize("wire", [b"", b"[]", b"{}", b'{"body": "!!", "signatures": []}', b"\xff" * 10])
def test_garbage_wire_is_malformed(wire, key):
    with pytest.raises(ManifestError) as e:
        verify(wire, trusted(key))
    assert e.value.reason == "malformed"


def test_tampered_chunk_is_rejected_naming_it(image, manifest):
    data = image.read_bytes()
    for i in range(4):
        off, n = chunk_range(manifest, i)
        verify_chunk(manifest, i, data[off : off + n])
    chunk = bytearray(data[CHUNK : 2 * CHUNK])
    chunk[10] ^= 0xFF
    with pytest.raises(ChunkError, match="firmware 1.10.0 chunk 1: SHA-256") as e:
        verify_chunk(manifest, 1, bytes(chunk))
    assert e.value.index == 1
    with pytest.raises(ChunkError, match="chunk 3: 4096 bytes, expected 100"):
        verify_chunk(manifest, 3, data[:CHUNK])
    with pytest.raises(ChunkError, match="no such chunk"):
        verify_chunk(manifest, 4, b"")


def test_verify_image(tmp_path, image, manifest):
    verify_image(manifest, image)
    bad = tmp_path / "bad.img"
    bad.write_bytes(image.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ImageError, match="does not match"):
        verify_image(manifest, bad)


def test_release_key_file_encrypted_0600(tmp_path, key):
    path = tmp_path / "release.key"
    kid = save_release_key(path, key, b"correct horse")
    assert kid == key_id(key.public_key()) and len(kid) == 16
    raw = key.public_key().public_bytes_raw()
    assert kid == hashlib.sha256(raw).hexdigest()[:16]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert key_id(load_release_key(path, b"correct horse").public_key()) == kid
    assert key_id(load_public_key(f"{path}.pub")) == kid
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_release_key(path, b"wrong")
    with pytest.raises(KeyFileError, match="empty passphrase"):
        save_release_key(tmp_path / "k2", key, b"")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        load_release_key(path, b"correct horse")


def test_release_cli_keygen_and_offline_sign(tmp_path, manifest, key):
    runner = CliRunner()
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    keyfile = tmp_path / "rel.key"
    r = runner.invoke(main, ["release", "keygen", "--out", str(keyfile), "--passphrase-file", str(pw)])
    assert r.exit_code == 0, r.output
    assert "release key" in r.output and stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    r = runner.invoke(main, ["release", "keygen", "--out", str(keyfile), "--passphrase-file", str(pw)])
    assert r.exit_code == 2 and "refusing to overwrite" in r.output

    mjson = tmp_path / "m.json"
    mjson.write_bytes(manifest.to_bytes())
    out = tmp_path / "m.signed"
    args = ["release", "sign", "--key", str(keyfile), "--manifest-json", str(mjson), "--out", str(out)]
    r = runner.invoke(main, [*args, "--passphrase-file", str(pw)])
    assert r.exit_code == 0, r.output
    assert "signed firmware 1.10.0" in r.output
    pub = load_public_key(f"{keyfile}.pub")
    assert verify(out.read_bytes(), {key_id(pub): pub}) == manifest

    # the prompt path, and a wrong passphrase: exit 2 with a message naming the key file
    r = runner.invoke(main, args, input="nope\n")
    assert r.exit_code == 2 and "wrong passphrase" in r.output and str(keyfile) in r.output

    # adding a second signature to a signed manifest
    keyfile2 = tmp_path / "rel2.key"
    save_release_key(keyfile2, key, b"other")
    pw2 = tmp_path / "pw2"
    pw2.write_text("other")
    out2 = tmp_path / "m.signed2"
    r = runner.invoke(
        main,
        ["release", "sign", "--key", str(keyfile2), "--manifest-json", str(out), "--out", str(out2), "--passphrase-file", str(pw2)],
    )
    assert r.exit_code == 0, r.output
    assert "2 signature(s)" in r.output
    assert verify(out2.read_bytes(), {key_id(pub): pub, **trusted(key)}, threshold=2) == manifest

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "1.0"}))
    r = runner.invoke(main, ["release", "sign", "--key", str(keyfile), "--manifest-json", str(bad), "--out", str(out)])
    assert r.exit_code == 2 and "malformed" not in r.output and "fields differ" in r.output


def test_signed_wire_uses_base64_body(manifest, key):
    wire = json.loads(sign_manifest(manifest, key).to_bytes())
    assert base64.b64decode(wire["body"]) == manifest.to_bytes()
    assert wire["signatures"][0]["key_id"] == key_id(key.public_key())


def test_untrusted_json_is_not_parsed_before_its_signature_checks() -> None:
    """Deep nesting in a body or an envelope is a ManifestError, never a RecursionError (issue 15, point 9)."""
    import base64
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from common.errors import ManifestError
    from common.firmware.manifest import SignedManifest, key_id, verify_manifest

    key = Ed25519PrivateKey.generate()
    trusted = {key_id(key.public_key()): key.public_key()}
    deep = b"[" * 200_000 + b"]" * 200_000
    forged = SignedManifest(deep, (("attacker", b"\0" * 64),))
    with pytest.raises(ManifestError) as exc:
        verify_manifest(forged, trusted, hw="sim-board-1", now_ms=0, security_floor=0)
    assert exc.value.reason in ("unsigned", "bad-signature", "unknown-key")
    envelope = json.dumps({"body": base64.b64encode(b"{}").decode(), "signatures": []}).encode()
    with pytest.raises(ManifestError, match="malformed|not JSON|unsigned"):
        verify_manifest(b"[" * 100_000 + envelope, trusted, hw="sim-board-1", now_ms=0, security_floor=0)

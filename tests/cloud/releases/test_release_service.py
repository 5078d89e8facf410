"""Releases: the pure parts (request checks, delta bases, signature judgement) and the served API with real
images, real deltas in a process pool and real signatures."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from cloud.http import ApiContext, create_app
from cloud.releases.artifacts import ArtifactStore
from cloud.releases.plan import ReleaseRequest, ReleaseSettings, check_signature, plan_bases
from cloud.releases.service import ReleaseService
from cloud.store import Store
from common.delta import apply_delta
from common.errors import ConfigError, ReleaseError
from common.firmware import (
    Manifest,
    SignedManifest,
    generate_release_key,
    key_id,
    sign_manifest,
)
from common.firmware.manifest import DOMAIN

if TYPE_CHECKING:
    from conftest import ReleaseCloud

NOW_MS = 1_700_000_000_000
Images = Callable[..., bytes]  # the sim_image fixture: (version, *, changed_blocks=(), base_seed=1) -> bytes

# -- pure parts ------------------------------------------------------------------------------


def test_request_parse_checks_everything_before_an_upload() -> None:
    req = ReleaseRequest.parse("1.2.0", ["gw-x1,gw-x2", "gw-x1"], min_version="1.0", security_version=3, expires_s=60)
    assert req == ReleaseRequest("1.2.0", ("gw-x1", "gw-x2"), "1.0", 3, 60)
    assert ReleaseRequest.parse("1.2.0", ["m"]).expires_s == 90 * 86_400
    for kwargs, match in [
        ({"version": "one"}, "version: firmware version 'one' does not parse"),
        ({"min_version": "x.y"}, "min_version"),
        ({"hw": [" , "]}, "at least one hardware model"),
        ({"hw": ["m" * 65]}, "1..64 printable"),
        ({"security_version": -1}, "security_version"),
        ({"expires_s": 0}, "expires_s"),
    ]:
        args: dict[str, Any] = {"version": "1.2.0", "hw": ["gw-x1"], **kwargs}
        with pytest.raises(ReleaseError, match=match) as info:
            ReleaseRequest.parse(args.pop("version"), args.pop("hw"), **args)
        assert info.value.reason == "invalid"


def test_settings_refuse_a_nonsense_k() -> None:
    with pytest.raises(ConfigError, match="release_delta_bases 17"):
        ReleaseSettings(delta_bases=17)


def test_plan_bases_takes_the_k_newest_older_published_releases_of_the_same_hardware() -> None:
    def rel(version: str, *hw: str) -> dict[str, Any]:
        return {"version": version, "hw": list(hw) or ["gw-x1"], "image_sha256": "0" * 64}

    published = [
        rel("1.0.0"),
        rel("1.2.0"),
        rel("1.10.0"),
        rel("1.9.0"),
        rel("2.0.0"),
        rel("1.11.0", "other"),
        rel("1.3.0", "other", "gw-x1"),
    ]
    assert [r["version"] for r in plan_bases("1.11.0", ["gw-x1"], published, 3)] == ["1.10.0", "1.9.0", "1.3.0"]
    assert [r["version"] for r in plan_bases("1.2.0", ["gw-x1"], published, 3)] == ["1.0.0"]
    assert plan_bases("1.11.0", ["gw-x1"], published, 0) == []
    assert plan_bases("0.1.0", ["gw-x1"], published, 3) == []


def _manifest(version: str = "1.0.0") -> Manifest:
    return Manifest(version, ("gw-x1",), 3, "a" * 64, 1 << 20, ("b" * 64,), 0, None, NOW_MS + 60_000, (), NOW_MS)


def test_check_signature_names_each_refusal() -> None:
    trusted, stranger = generate_release_key(), generate_release_key()
    keys = {key_id(trusted.public_key()): trusted.public_key()}
    m = _manifest()
    body = m.to_bytes()
    good = sign_manifest(m, trusted)
    assert check_signature(body, good.to_bytes(), keys, now_ms=NOW_MS, version="1.0.0") == good

    def reason(signed: bytes, *, trusted_keys: Any = keys, now_ms: int = NOW_MS) -> str:
        with pytest.raises(ReleaseError) as info:
            check_signature(body, signed, trusted_keys, now_ms=now_ms, version="1.0.0")
        return info.value.reason

    assert reason(sign_manifest(m, stranger).to_bytes()) == "unknown-key"
    assert (
        reason(sign_manifest(dataclasses.replace(m, expires_ms=m.expires_ms + 1), trusted).to_bytes()) == "body-differs"
    )
    forged = SignedManifest(body, ((key_id(trusted.public_key()), trusted.sign(DOMAIN + b"something else")),))
    assert reason(forged.to_bytes()) == "bad-signature"
    assert reason(SignedManifest(body, ()).to_bytes()) == "unsigned"
    assert reason(b"not json") == "malformed"
    assert reason(good.to_bytes(), now_ms=m.expires_ms) == "expired"
    assert reason(good.to_bytes(), trusted_keys={}) == "no-trusted-keys"
    with pytest.raises(ReleaseError, match="fields that differ: expires_ms"):
        check_signature(
            body,
            sign_manifest(dataclasses.replace(m, expires_ms=1), trusted).to_bytes(),
            keys,
            now_ms=NOW_MS,
            version="1.0.0",
        )


# -- the served API --------------------------------------------------------------------------


@pytest.fixture
def api(release_cloud: ReleaseCloud) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=release_cloud.url, headers=release_cloud.auth, timeout=60) as client:
        yield client


def create(api: httpx.Client, version: str, hw: str, image: bytes, **params: Any) -> httpx.Response:
    return api.post(
        "/v1/releases",
        params={"version": version, "hw": hw, **params},
        content=iter([image[i : i + 50_000] for i in range(0, len(image), 50_000)]),  # streamed: chunked encoding
        headers={"Content-Type": "application/octet-stream"},
    )


def sign_and_post(api: httpx.Client, made: dict[str, Any], key: Any) -> httpx.Response:
    signed = sign_manifest(Manifest.from_dict(json.loads(made["manifest_body"])), key)
    return api.post(f"/v1/releases/{made['version']}/signature", content=signed.to_bytes())


def publish(api: httpx.Client, version: str, hw: str, image: bytes, key: Any) -> dict[str, Any]:
    made = create(api, version, hw, image)
    assert made.status_code == 201, made.text
    published = sign_and_post(api, made.json(), key)
    assert published.status_code == 200, published.text
    return made.json()


def test_create_returns_an_unsigned_manifest_with_a_delta_from_the_previous_release(
    api: httpx.Client, release_cloud: ReleaseCloud, sim_image: Images
) -> None:
    old, new = sim_image("1.0.0"), sim_image("1.1.0", changed_blocks=(3, 40))
    publish(api, "1.0.0", "hw-delta", old, release_cloud.key)
    submitted = release_cloud.pool.submitted
    response = create(api, "1.1.0", "hw-delta", new, security_version=2, min_version="1.0.0", expires_s=3600)
    assert response.status_code == 201, response.text
    made = response.json()
    assert release_cloud.pool.submitted == submitted + 1  # the delta ran in the process pool
    assert (made["state"], made["size"], made["sha256"]) == ("unsigned", len(new), hashlib.sha256(new).hexdigest())
    [delta] = made["deltas"]
    assert (delta["from_version"], delta["status"]) == ("1.0.0", "offered")
    assert delta["size"] < len(new) // 20 and delta["detail"]["ratio"] < 0.05
    m = Manifest.from_dict(made["manifest"])
    assert m.to_bytes().decode() == made["manifest_body"]
    assert (m.version, m.hw, m.security_version, m.min_version) == ("1.1.0", ("hw-delta",), 2, "1.0.0")
    assert (m.chunk_size, len(m.chunks)) == (64 << 10, 4)
    assert m.chunks[0] == hashlib.sha256(new[: 64 << 10]).hexdigest()
    assert m.deltas == (m.delta_from("1.0.0"),) and m.delta_from("1.0.0").sha256 == delta["sha256"]
    assert m.expires_ms - m.issued_ms == 3_600_000
    # the delta is stored content-addressed and rebuilds the new image from the old one
    artifacts = release_cloud.data_dir / "artifacts"
    patch = artifacts / delta["sha256"]
    assert hashlib.sha256(patch.read_bytes()).hexdigest() == delta["sha256"]
    rebuilt = release_cloud.data_dir / "rebuilt.img"
    apply_delta(artifacts / hashlib.sha256(old).hexdigest(), patch, rebuilt)
    assert rebuilt.read_bytes() == new
    assert api.get("/v1/releases/1.1.0").json()["state"] == "unsigned"


def test_the_image_is_stored_content_addressed(
    api: httpx.Client, release_cloud: ReleaseCloud, sim_image: Images
) -> None:
    image = sim_image("40.0.0", base_seed=4)
    made = create(api, "40.0.0", "hw-cas", image).json()
    path = release_cloud.data_dir / "artifacts" / made["sha256"]
    assert path.read_bytes() == image and hashlib.sha256(path.read_bytes()).hexdigest() == made["sha256"]
    # the same bytes as another (unsigned) release are one file
    again = create(api, "40.0.1", "hw-cas", image).json()
    assert again["sha256"] == made["sha256"]
    assert [p.name for p in (release_cloud.data_dir / "artifacts").iterdir()].count(made["sha256"]) == 1
    assert list((release_cloud.data_dir / "artifacts" / ".tmp").iterdir()) == []


def test_signatures_that_are_refused_then_one_that_publishes(
    api: httpx.Client, release_cloud: ReleaseCloud, sim_image: Images
) -> None:
    made = create(api, "2.0.0", "hw-sig", sim_image("2.0.0", base_seed=2)).json()
    manifest = Manifest.from_dict(made["manifest"])

    def refused(signed: bytes) -> dict[str, Any]:
        response = api.post("/v1/releases/2.0.0/signature", content=signed)
        assert response.status_code == 400, response.text
        return response.json()

    stranger = generate_release_key()
    body = refused(sign_manifest(manifest, stranger).to_bytes())
    assert body["error"] == "unknown_key" and key_id(stranger.public_key()) in body["detail"]
    longer = dataclasses.replace(manifest, expires_ms=manifest.expires_ms + 86_400_000)
    body = refused(sign_manifest(longer, release_cloud.key).to_bytes())
    assert body["error"] == "body_differs" and "expires_ms" in body["detail"]
    forged = SignedManifest(manifest.to_bytes(), ((key_id(release_cloud.key.public_key()), b"\0" * 64),))
    assert refused(forged.to_bytes())["error"] == "bad_signature"
    assert refused(b"{}")["error"] == "malformed"
    assert api.get("/v1/releases/2.0.0").json()["state"] == "unsigned"

    signed = sign_manifest(manifest, release_cloud.key)
    response = api.post("/v1/releases/2.0.0/signature", content=signed.to_bytes())
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["state"] == "published" and shown["published_ms"] is not None
    assert api.post("/v1/releases/2.0.0/signature", content=signed.to_bytes()).status_code == 200  # the same again
    other = api.post(
        "/v1/releases/2.0.0/signature", content=sign_manifest(manifest, release_cloud.second_key).to_bytes()
    )
    assert (other.status_code, other.json()["error"]) == (409, "published")
    assert api.post("/v1/releases/9.9.9/signature", content=signed.to_bytes()).status_code == 404
    again = create(api, "2.0.0", "hw-sig", sim_image("2.0.0", base_seed=2))
    assert (again.status_code, again.json()["error"]) == (409, "exists")
    detail = api.get("/v1/releases/2.0").json()  # 2.0 == 2.0.0
    assert detail["signed_by"] == [key_id(release_cloud.key.public_key())]
    assert SignedManifest.from_bytes(detail["signed_manifest"].encode()) == signed


def test_an_unsigned_release_created_again_is_replaced_and_old_signatures_stop_fitting(
    api: httpx.Client, release_cloud: ReleaseCloud, sim_image: Images
) -> None:
    first = create(api, "5.0.0", "hw-redo", sim_image("5.0.0", base_seed=5)).json()
    second = create(api, "5.0.0", "hw-redo", sim_image("5.0.0", base_seed=6))
    assert second.status_code == 201 and second.json()["sha256"] != first["sha256"]
    stale = sign_and_post(api, first, release_cloud.key)
    assert (stale.status_code, stale.json()["error"]) == (400, "body_differs")
    assert sign_and_post(api, second.json(), release_cloud.key).status_code == 200


def test_k_newest_bases_get_deltas_and_an_unrelated_image_gets_none(
    api: httpx.Client, release_cloud: ReleaseCloud, sim_image: Images
) -> None:
    publish(api, "3.0.0", "hw-k", sim_image("3.0.0", base_seed=3), release_cloud.key)
    publish(api, "3.1.0", "hw-k", sim_image("3.1.0", base_seed=3, changed_blocks=(5,)), release_cloud.key)
    third = create(api, "3.2.0", "hw-k", sim_image("3.2.0", base_seed=3, changed_blocks=(5, 50))).json()
    assert [(d["from_version"], d["status"]) for d in third["deltas"]] == [("3.0.0", "offered"), ("3.1.0", "offered")]
    assert {d.from_version for d in Manifest.from_dict(third["manifest"]).deltas} == {"3.0.0", "3.1.0"}
    assert sign_and_post(api, third, release_cloud.key).status_code == 200
    publish(api, "3.3.0", "hw-k", sim_image("3.3.0", base_seed=3, changed_blocks=(7,)), release_cloud.key)

    unrelated = random.Random(99).randbytes(256 << 10)
    made = create(api, "3.9.0", "hw-k", unrelated).json()
    assert [(d["from_version"], d["status"]) for d in made["deltas"]] == [
        ("3.1.0", "not-worth-it"),
        ("3.2.0", "not-worth-it"),
        ("3.3.0", "not-worth-it"),  # K = 3: not 3.0.0
    ]
    assert all(d["sha256"] is None and d["size"] > 0 for d in made["deltas"])
    assert "offered only under 80%" in made["deltas"][0]["detail"]["note"]
    assert made["manifest"]["deltas"] == []


def test_list_and_show(api: httpx.Client, release_cloud: ReleaseCloud, sim_image: Images) -> None:
    publish(api, "6.0.0", "hw-list", sim_image("6.0.0", base_seed=7), release_cloud.key)
    create(api, "6.1.0", "hw-list", sim_image("6.1.0", base_seed=7, changed_blocks=(1,)))
    rows = {r["version"]: r for r in api.get("/v1/releases").json()["releases"]}
    assert (rows["6.0.0"]["state"], rows["6.1.0"]["state"]) == ("published", "unsigned")
    assert [d["from_version"] for d in rows["6.1.0"]["deltas"]] == ["6.0.0"]
    assert "manifest" not in rows["6.1.0"]
    shown = api.get("/v1/releases/6.1.0").json()
    assert shown["manifest"]["version"] == "6.1.0" and shown["signed_manifest"] is None and shown["signed_by"] == []
    missing = api.get("/v1/releases/7.7.7")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


def test_bad_requests_are_refused_before_the_upload(api: httpx.Client, release_cloud: ReleaseCloud) -> None:
    bad = create(api, "not-a-version", "hw-bad", b"x")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid")
    assert api.post("/v1/releases", params={"version": "1.0.0"}, content=b"x").status_code == 422  # no hw
    empty = create(api, "8.0.0", "hw-bad", b"")
    assert (empty.status_code, empty.json()["error"]) == (400, "empty")
    assert not (release_cloud.data_dir / "artifacts" / hashlib.sha256(b"").hexdigest()).exists()
    assert httpx.get(f"{release_cloud.url}/v1/releases").status_code == 401


def test_an_image_over_the_limit_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    async def run() -> tuple[int, dict[str, Any]]:
        store = Store.open(f"sqlite:///{tmp_path / 'cloud.db'}")
        service = ReleaseService(
            store.releases, ArtifactStore(tmp_path / "artifacts"), {}, ReleaseSettings(max_image_bytes=1000)
        )
        service.start()

        async def body() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 300

        app = create_app(ApiContext(store, "t", releases=service))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers={"Authorization": "Bearer t"}
        ) as client:
            response = await client.post("/v1/releases", params={"version": "1.0.0", "hw": "m"}, content=body())
        await service.stop()
        store.close()
        return response.status_code, response.json()

    status, body = asyncio.run(run())
    assert (status, body["error"]) == (413, "too_large")
    assert list((tmp_path / "artifacts").iterdir()) == [tmp_path / "artifacts" / ".tmp"]
    assert list((tmp_path / "artifacts" / ".tmp").iterdir()) == []

"""``edgefleet release create|publish|list|show`` end to end against a served cloud (``release_cloud``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from cloud.cli.releases import check_manifest
from cloud.driver import CloudConfig, run_cloud
from cloud.releases.plan import ReleaseSettings
from common.cli import main
from common.errors import ConfigError
from common.firmware import Manifest, build_manifest, key_id
from tests.waits import until_true

if TYPE_CHECKING:
    from conftest import ReleaseCloud

Images = Callable[..., bytes]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("EDGEFLEET_API", "EDGEFLEET_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def conn(cloud: ReleaseCloud) -> list[str]:
    return ["--api", cloud.url, "--token", cloud.auth["Authorization"].split()[1]]


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_create_with_a_key_uploads_signs_and_publishes(
    runner: CliRunner, release_cloud: ReleaseCloud, sim_image: Images, tmp_path: Path
) -> None:
    key = ["--key", str(release_cloud.key_path), "--passphrase-file", str(release_cloud.passphrase_file)]
    first = write(tmp_path / "10.0.0.img", sim_image("10.0.0", base_seed=10))
    result = runner.invoke(
        main,
        ["release", "create", "--image", first, "--version", "10.0.0", "--hw", "hw-cli", *key, *conn(release_cloud)],
    )
    assert result.exit_code == 0, result.output
    kid = key_id(release_cloud.key.public_key())
    assert f"release 10.0.0 (hw-cli): published, signed by key {kid}" in result.stdout
    assert "deltas: none" in result.stdout and "took" in result.stdout
    assert "uploading" in result.stderr  # the progress bar goes to stderr

    second = write(tmp_path / "10.1.0.img", sim_image("10.1.0", base_seed=10, changed_blocks=(9,)))
    args = [
        "release",
        "create",
        "--image",
        second,
        "--version",
        "10.1.0",
        "--hw",
        "hw-cli",
        "--security-version",
        "4",
        "--expires",
        "30d",
        *key,
        *conn(release_cloud),
        "--json",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["state"], shown["security_version"], shown["signed_by"]) == ("published", 4, [kid])
    [delta] = shown["deltas"]
    assert (delta["from_version"], delta["status"]) == ("10.0.0", "offered") and delta["size"] < 10_000
    m = shown["manifest"]
    assert m["expires_ms"] - m["issued_ms"] == 30 * 86_400_000
    assert "manifest_body" not in shown and shown["seconds"] > 0


def test_without_a_key_the_release_waits_for_an_offline_signature(
    runner: CliRunner, release_cloud: ReleaseCloud, sim_image: Images, tmp_path: Path
) -> None:
    image = write(tmp_path / "11.0.0.img", sim_image("11.0.0", base_seed=11))
    manifest_json = tmp_path / "m.json"
    result = runner.invoke(
        main,
        [
            "release",
            "create",
            "--image",
            image,
            "--version",
            "11.0.0",
            "--hw",
            "hw-offline",
            "--manifest-out",
            str(manifest_json),
            *conn(release_cloud),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "release 11.0.0 (hw-offline): unsigned" in result.stdout and "release publish 11.0.0" in result.stdout
    signed = tmp_path / "m.signed"
    result = runner.invoke(
        main,
        [
            "release",
            "sign",
            "--key",
            str(release_cloud.key_path),
            "--manifest-json",
            str(manifest_json),
            "--out",
            str(signed),
            "--passphrase-file",
            str(release_cloud.passphrase_file),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["release", "publish", "11.0.0", "--signed", str(signed), *conn(release_cloud)])
    assert result.exit_code == 0, result.output
    assert "release 11.0.0 (hw-offline): published, signed by key" in result.stdout


def test_list_and_show(runner: CliRunner, release_cloud: ReleaseCloud, sim_image: Images, tmp_path: Path) -> None:
    key = ["--key", str(release_cloud.key_path), "--passphrase-file", str(release_cloud.passphrase_file)]
    for version, blocks in (("12.0.0", ()), ("12.1.0", (2,))):
        image = write(tmp_path / f"{version}.img", sim_image(version, base_seed=12, changed_blocks=blocks))
        args = [
            "release",
            "create",
            "--image",
            image,
            "--version",
            version,
            "--hw",
            "hw-show",
            *key,
            *conn(release_cloud),
        ]
        assert runner.invoke(main, args).exit_code == 0
    result = runner.invoke(main, ["release", "list", *conn(release_cloud)])
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["VERSION", "STATE", "HW", "SIZE", "SHA256"]
    [row] = [r for r in rows if r.startswith("12.1.0 ")]
    assert "published" in row and "hw-show" in row and "12.0.0 (" in row
    listed = json.loads(runner.invoke(main, ["release", "list", "--json", *conn(release_cloud)]).stdout)
    assert {"12.0.0", "12.1.0"} <= {r["version"] for r in listed}

    result = runner.invoke(main, ["release", "show", "12.1.0", *conn(release_cloud)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("release 12.1.0: published\n")
    assert "chunks            4 of 65536 bytes" in result.stdout
    assert "12.0.0  offered" in result.stdout
    shown = json.loads(runner.invoke(main, ["release", "show", "12.1.0", "--json", *conn(release_cloud)]).stdout)
    assert shown["manifest"]["deltas"][0]["from_version"] == "12.0.0"
    missing = runner.invoke(main, ["release", "show", "99.0.0", *conn(release_cloud)])
    assert missing.exit_code == 2 and "no such release" in missing.output


def test_a_wrong_passphrase_fails_before_anything_is_uploaded(
    runner: CliRunner, release_cloud: ReleaseCloud, sim_image: Images, tmp_path: Path
) -> None:
    image = write(tmp_path / "13.0.0.img", sim_image("13.0.0", base_seed=13))
    wrong = write(tmp_path / "wrong", b"not the passphrase\n")
    result = runner.invoke(
        main,
        [
            "release",
            "create",
            "--image",
            image,
            "--version",
            "13.0.0",
            "--hw",
            "hw-pass",
            "--key",
            str(release_cloud.key_path),
            "--passphrase-file",
            wrong,
            *conn(release_cloud),
        ],
    )
    assert result.exit_code == 2 and "wrong passphrase" in result.output
    assert release_cloud.store.releases.get_release("13.0.0") is None


def test_check_manifest_refuses_a_manifest_for_other_bytes(tmp_path: Path) -> None:
    image = tmp_path / "fw.img"
    image.write_bytes(b"firmware" * 10_000)
    m = build_manifest(str(image), "1.0.0", ["gw-x1"], security_version=1, expires_ms=2, issued_ms=1, chunk_size=4096)
    sha = m.sha256
    params = {"version": "1.0.0", "hw": ["gw-x1"], "security_version": 1}
    assert check_manifest(m.to_bytes().decode(), m, str(image), sha, params) == []
    other = dataclasses.replace(m, sha256="0" * 64)
    assert any("SHA-256" in p for p in check_manifest(other.to_bytes().decode(), other, str(image), sha, params))
    chunks = dataclasses.replace(m, chunks=("0" * 64, *m.chunks[1:]))
    assert check_manifest(chunks.to_bytes().decode(), chunks, str(image), sha, params) == [
        "chunk hashes differ from the file's"
    ]
    assert check_manifest(m.to_bytes().decode(), m, str(image), sha, {**params, "hw": ["gw-x2"]}) == [
        "it is for 1.0.0 on gw-x1"
    ]
    assert check_manifest(m.to_bytes().decode() + " ", m, str(image), sha, params) == [
        "its body is not the canonical form of its manifest"
    ]
    assert check_manifest(m.to_bytes().decode(), m, str(image), "f" * 64, params) == [
        f"{image} changed during the upload"
    ]
    assert Manifest.from_dict(m.to_dict()) == m


def test_the_cloud_trusts_its_configured_release_keys_and_the_cli_finds_it_by_data_dir(
    runner: CliRunner, release_cloud: ReleaseCloud, sim_image: Images, tmp_path: Path
) -> None:
    data = tmp_path / "cloud"
    cfg = CloudConfig(
        data_dir=data,
        bind="tcp://127.0.0.1:*",
        api_port=0,
        release_keys=(f"{release_cloud.key_path}.pub",),
        releases=ReleaseSettings(delta_isolate=False),
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    done = asyncio.run_coroutine_threadsafe(run_cloud(cfg, stop), loop)
    try:
        until_true(lambda: (data / "endpoints.json").exists() or done.done(), "the cloud to bind (endpoints.json)",
                   every_s=0.05)
        assert not done.done(), done.result()
        key = ["--key", str(release_cloud.key_path), "--passphrase-file", str(release_cloud.passphrase_file)]
        for version, blocks in (("14.0.0", ()), ("14.1.0", (1,))):
            image = write(tmp_path / f"{version}.img", sim_image(version, base_seed=14, changed_blocks=blocks))
            args = [
                "release",
                "create",
                "--image",
                image,
                "--version",
                version,
                "--hw",
                "hw-driver",
                *key,
                "--data-dir",
                str(data),
                "--json",
            ]
            result = runner.invoke(main, args)
            assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert shown["state"] == "published" and [d["status"] for d in shown["deltas"]] == ["offered"]
        assert (data / "artifacts" / shown["sha256"]).is_file()
        assert (data / "artifacts" / shown["deltas"][0]["sha256"]).is_file()
    finally:
        loop.call_soon_threadsafe(stop.set)
        done.result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_bad_release_key_file_stops_the_cloud_before_it_starts(tmp_path: Path) -> None:
    (tmp_path / "bad.pub").write_text("not a key")
    cfg = CloudConfig(
        data_dir=tmp_path / "cloud", bind="tcp://127.0.0.1:*", api_port=0, release_keys=(str(tmp_path / "bad.pub"),)
    )
    with pytest.raises(ConfigError, match="release_keys: public key .*bad.pub"):
        asyncio.run(run_cloud(cfg, asyncio.Event()))

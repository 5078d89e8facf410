"""The device's download step: the manifest is checked before a byte is fetched; a tampered one is
refused and reported, nothing installed. (The transfer itself runs on real sockets in
tests/gateway/test_firmware_delivery.py.)"""

from __future__ import annotations

import asyncio
import base64
import json

from common.protocol import FirmwareOffer
from device_agent.download import FirmwareDownloader
from device_agent.updater import FACTORY_VERSION
from tests.device_agent.test_updater import key, release, updater  # noqa: F401 -- the fixture and helpers


class Upstream:
    """Answers the offer with ``manifest``; records whether anything was fetched."""

    def __init__(self, manifest: bytes, sha: str, size: int) -> None:
        self.manifest, self.sha, self.size, self.fetched = manifest, sha, size, []

    async def offer(self, version, hw, bases):
        return FirmwareOffer(1, version, self.manifest, "full", self.sha, "", "", self.size, 1 << 20, [], "")

    async def fetch(self, plan, part, final):
        self.fetched.append(plan.artifact)
        raise AssertionError("nothing may be fetched for a refused manifest")


def tampered(signed: bytes) -> bytes:
    doc = json.loads(signed)
    body = bytearray(base64.b64decode(doc["body"]))
    body[body.index(b'"size":') + 8] ^= 1  # one digit of the image size
    doc["body"] = base64.b64encode(bytes(body)).decode()
    return json.dumps(doc).encode()


def test_a_tampered_manifest_is_refused_before_any_download_and_reported(tmp_path, key):  # noqa: F811
    reports = []
    u = updater(tmp_path, reports)
    manifest_path, image = release(tmp_path, key, "2.0.0")
    m = json.loads(open(manifest_path, "rb").read())
    up = Upstream(tampered(open(manifest_path, "rb").read()), "ab" * 32, 10)
    d = FirmwareDownloader(tmp_path / "dev", "sim-board-1", u, up, reports.append)
    result = asyncio.run(_run(d))
    assert result.startswith("refused") and "signature" in result
    assert up.fetched == [] and u.running()["version"] == FACTORY_VERSION
    assert reports[-1]["outcome"] == "failed" and "does not verify" in reports[-1]["reason"]
    assert m  # the genuine manifest parsed: only the tampering was refused
    assert not (tmp_path / "dev" / "downloads" / "pending.json").exists()


async def _run(d: FirmwareDownloader, deadline_args: dict[str, str] | None = None) -> str:
    return await d.update_to("2.0.0", deadline_args)


class Serves(Upstream):
    """Offers the genuine release and 'fetches' it by copying the image (the transfer is tested elsewhere)."""

    def __init__(self, manifest: bytes, image: str, sha: str, size: int) -> None:
        super().__init__(manifest, sha, size)
        self.image = image

    async def fetch(self, plan, part, final):
        self.fetched.append(plan.artifact)
        final.write_bytes(open(self.image, "rb").read())
        return final


def test_a_download_complete_past_its_install_deadline_is_not_installed_and_is_kept(tmp_path, key):  # noqa: F811
    from common.install_deadline import LATE_INSTALL_REFUSED
    from device_agent.updater import FACTORY_VERSION as FACTORY

    reports = []
    u = updater(tmp_path, reports)
    manifest_path, image = release(tmp_path, key, "2.0.0")
    signed = open(manifest_path, "rb").read()
    m = u.check(signed)
    d = FirmwareDownloader(tmp_path / "dev", "sim-board-1", u, Serves(signed, image, m.sha256, m.size), reports.append)
    past = str(u.now_ms() - 60_000)  # the window closed a minute ago
    result = asyncio.run(_run(d, {"install_by_ms": past, "version": "2.0.0"}))
    assert result.startswith(LATE_INSTALL_REFUSED) and u.running()["version"] == FACTORY
    assert reports[-1]["outcome"] == LATE_INSTALL_REFUSED and "closed" in reports[-1]["reason"]
    assert (tmp_path / "dev" / "downloads" / m.sha256).exists()  # kept: the next window starts from it
    # the next window: the same command, a deadline ahead
    result = asyncio.run(_run(d, {"install_by_ms": str(u.now_ms() + 3_600_000)}))
    assert u.running()["version"] == "2.0.0" and reports[-1]["outcome"] == "committed", result

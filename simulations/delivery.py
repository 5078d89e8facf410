"""Firmware delivery on real parts: a cloud and gateways as OS processes, devices as in-process clients.

Used by ``benchmarks/wan_bytes.py`` and the delivery tests. The cloud and each gateway are real
``edgefleet`` processes (``ProcFleet``), each gateway's uplink through a ``FaultProxy`` that counts
the bytes crossing it (the site's WAN) and can cut it. A ``SimDevice`` is the device side of the
protocol on a real CURVE DEALER socket: Hello and heartbeats, then the real ``Fetcher``; it checks
the signed manifest against the release key, rebuilds the image from a delta when offered one, and
checks the result against the manifest, as the agent does (without the A/B install, so hundreds
of them fit in one process).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq.asyncio

from common.effects import UPSTREAM, Received
from common.firmware.chunks import verify_image
from common.firmware.keys import generate_release_key, load_trusted_keys, public_key_pem, save_release_key
from common.firmware.manifest import verify_manifest
from common.keys import load_or_create_keypair
from common.protocol import SUPPORTED_VERSIONS, ChunkData, FirmwareOffer, Heartbeat, Hello, HelloAck
from common.sockets import UpstreamLink
from common.transfer.download import Plan
from common.transfer.fetcher import Fetcher
from simulations.fleet import ProcFleet

__all__ = ["ReleaseKey", "SimDevice", "make_key", "make_versions", "publish"]

PASSPHRASE = b"delivery drill"


@dataclass(frozen=True, slots=True)
class ReleaseKey:
    private: Path
    public: Path
    passphrase_file: Path


def make_key(root: Path) -> ReleaseKey:
    root.mkdir(parents=True, exist_ok=True)
    key = generate_release_key()
    save_release_key(root / "release.key", key, PASSPHRASE)
    (root / "release.pub").write_bytes(public_key_pem(key.public_key()))
    (root / "passphrase").write_bytes(PASSPHRASE + b"\n")
    return ReleaseKey(root / "release.key", root / "release.pub", root / "passphrase")


def make_versions(root: Path, versions: list[str], size: int, seed: int = 1, change: float = 0.02) -> dict[str, Path]:
    """Images of ``size`` bytes built from real files on this machine (the Python library), each
    version a copy of the one before with about ``change`` of its bytes rewritten, in runs of 16 to
    512 bytes scattered over the image."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lib = Path(sysconfig.get_paths()["stdlib"])
    data = bytearray()
    for f in sorted(lib.rglob("*.py")):
        if len(data) >= size:
            break
        data += f.read_bytes()
    data = data[:size] + bytes(max(0, size - len(data)))
    out = {}
    for i, v in enumerate(versions):
        if i:
            for _ in range(max(1, int(size * change / 264))):
                at = rng.randrange(0, size - 512)
                n = rng.randint(16, 512)
                data[at:at + n] = rng.randbytes(n)
        path = root / f"fw-{v}.img"
        path.write_bytes(bytes(data))
        out[v] = path
    return out


def publish(fleet: ProcFleet, key: ReleaseKey, image: Path, version: str, hw: str, module: str = "rootfs-image"
            ) -> dict[str, Any]:
    """``edgefleet release create`` with the key: uploaded, deltas made, signed, published."""
    import json

    ep = fleet.endpoints("cloud")
    token = (fleet.dir("cloud") / "api_token").read_text().strip()
    out = subprocess.run(
        [sys.executable, "-m", "common", "release", "create", "--image", str(image), "--version", version, "--hw", hw,
         "--key", str(key.private), "--passphrase-file", str(key.passphrase_file), "--api", ep["api"], "--token", token,
         "--module", module, "--json"],
        capture_output=True, text=True, timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"release create {version} failed: {out.stderr or out.stdout}")
    return json.loads(out.stdout)


class SimDevice:
    """One device's side of firmware delivery, in process, on a real socket."""

    def __init__(self, fleet: ProcFleet, name: str, site: str, gateway: str, *, hw: str, release_pub: Path,
                 version: str, image: Path, window: int = 1, rate: float = 0.0, heartbeat_s: float = 0.5,
                 endpoint: str = "") -> None:
        self.fleet, self.name, self.site, self.gateway, self.hw = fleet, name, site, gateway, hw
        self.trusted = load_trusted_keys([release_pub])
        self.version, self.image = version, image
        self.window, self.rate, self.heartbeat_s, self.endpoint = window, rate, heartbeat_s, endpoint
        self.dir = fleet.dir(name)
        self.up = asyncio.Event()
        self.link: UpstreamLink | None = None
        self.fetcher: Fetcher | None = None
        self._beat: asyncio.Task[None] | None = None
        self.failures: list[tuple[int, str]] = []  # (chunk, cause) of every chunk that failed its check

    async def start(self, ctx: zmq.asyncio.Context) -> None:
        self.fleet.allow(self.gateway, self.name)
        keys = load_or_create_keypair(self.dir)
        gw = self.fleet.endpoints(self.gateway)
        server_key = load_or_create_keypair(self.fleet.dir(self.gateway)).public
        self.link = UpstreamLink(ctx, self.endpoint or gw["devices"], keys, server_key, self._event)
        self.fetcher = Fetcher(self.link.send, is_up=self.up.is_set, window=self.window, rate_bytes_per_s=self.rate,
                               timeout_s=5.0, on_failure=lambda _a, index, cause: self.failures.append((index, cause)))
        self.link.open()
        self._beat = asyncio.ensure_future(self._heartbeats())
        await asyncio.wait_for(self.up.wait(), 30)

    async def _heartbeats(self) -> None:
        assert self.link is not None
        hello = Hello(self.name, "device", self.site, *SUPPORTED_VERSIONS)
        while True:
            self.link.send(hello if not self.up.is_set() else Heartbeat(int(time.time() * 1000)))
            await asyncio.sleep(self.heartbeat_s)

    def _event(self, event: Any) -> None:
        if not isinstance(event, Received) or event.peer != UPSTREAM:
            return
        msg = event.msg
        if isinstance(msg, HelloAck):
            self.up.set()
        elif isinstance(msg, (FirmwareOffer, ChunkData)):
            assert self.fetcher is not None
            self.fetcher.on_message(msg)
        elif getattr(msg, "code", "") == "hello-first":
            self.up.clear()

    async def update(self, version: str) -> dict[str, Any]:
        """Fetch release ``version`` as a device would; returns what crossed and how."""
        from common.delta import apply_delta

        assert self.fetcher is not None
        loop = asyncio.get_running_loop()
        offer = await self.fetcher.offer(version, self.hw, [self.version])
        m = verify_manifest(offer.manifest, self.trusted, hw=self.hw, now_ms=int(time.time() * 1000), security_floor=0,
                            current_version=self.version)
        if offer.kind == "full":
            plan = Plan(m.sha256, m.size, m.chunk_size, tuple(m.chunks))
        else:
            plan = Plan(offer.artifact, offer.size, offer.chunk_size, tuple(offer.chunks))
        got = await self.fetcher.fetch(plan, self.dir / f"{plan.artifact}.part", self.dir / plan.artifact)
        new = self.dir / f"fw-{version}.img"
        if offer.kind == "delta":
            await loop.run_in_executor(None, apply_delta, self.image, got, new)
        else:
            new.write_bytes(got.read_bytes())
        await loop.run_in_executor(None, verify_image, m, new)
        self.version, self.image = version, new
        return {"kind": offer.kind, "bytes": plan.size, "from": offer.from_version,
                "sha256": hashlib.sha256(new.read_bytes()).hexdigest(), **self.fetcher.counters}

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        if self.fetcher is not None:
            self.fetcher.close()
        if self.link is not None:
            await self.link.close()

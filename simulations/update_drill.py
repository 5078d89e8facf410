"""The demo's update drill: sign a release, roll it to every device, some with an image that fails its self-test.

The release is real as far as the devices can tell: a release key made for the
run, images hashed into a manifest signed with it (``common.firmware``), and an
``update`` command sent to each device through the cloud and its gateway. Each
device verifies the manifest against the key it was started with, installs the
image into its inactive slot, reboots into a trial, runs its health checks and
commits or rolls back, then reports the outcome upstream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from common.fileio import write_atomic
from device_agent import simimage

__all__ = ["HW", "Release", "make_release", "roll_out", "wait_for_outcomes"]

HW = "sim-board-1"
VERSION = "2.0.0"
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Release:
    public_key: Path
    good: tuple[Path, Path]  # (signed manifest, image)
    bad: tuple[Path, Path]  # same version, an image whose self-test fails


def make_release(root: Path, version: str = VERSION, size: int = 256 * 1024, *, rootfs: bool = False) -> Release:
    """Sign a good and a bad image of ``version``: simulated images, or with ``rootfs`` ext2 root filesystems
    (``simulations.board_dir.make_rootfs``: raw slot content, for agents on a board in a directory)."""
    from common.firmware.keys import generate_release_key, public_key_pem
    from common.firmware.manifest import build_manifest, sign_manifest

    root.mkdir(parents=True, exist_ok=True)
    key = generate_release_key()
    pub = root / "release.pub"
    write_atomic(pub, public_key_pem(key.public_key()), 0o644)
    now = int(time.time() * 1000)
    out = []
    for name, health in (("good", "ok"), ("bad", "fail")):
        image = root / f"fw-{version}-{name}.img"
        if rootfs:
            from simulations.board_dir import make_rootfs

            make_rootfs(image, version, health)
        else:
            write_atomic(image, simimage.make(version, health, size), 0o644)
        manifest = build_manifest(str(image), version, [HW], security_version=1, expires_ms=now + DAY_MS, issued_ms=now)
        signed = root / f"fw-{version}-{name}.manifest"
        write_atomic(signed, sign_manifest(manifest, key).to_bytes(), 0o644)
        out.append((signed, image))
    return Release(pub, out[0], out[1])


def roll_out(fleet, release: Release, devices: list[str], bad: set[str]) -> None:
    """Send the update command to every device (the ``bad`` ones get the image that fails).

    The cloud takes commands only for devices it knows, so this first waits until every device has
    reported through its gateway."""
    deadline = time.monotonic() + 60
    while not set(devices) <= {d["device_id"] for d in fleet.api("/v1/devices")["devices"]}:
        if time.monotonic() > deadline:
            raise TimeoutError("not every device reached the cloud within 60 s; see the logs")
        time.sleep(0.2)
    for device in devices:
        manifest, image = release.bad if device in bad else release.good
        fleet.api(f"/v1/devices/{device}/commands",
                  {"name": "update", "args": {"manifest": str(manifest), "image": str(image)}, "ttl_s": 600})


def wait_for_outcomes(fleet, devices: list[str], timeout_s: float = 90.0, tick=None) -> dict[str, dict]:
    """The last reported outcome of each device (waits until every device reported one, or the timeout);
    ``tick()`` is called while waiting (the demo's boards reboot their agents there)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if tick is not None:
            tick()
        latest = {u["device_id"]: u["values"] for u in fleet.api("/v1/updates")["updates"]}
        if all(d in latest for d in devices) or time.monotonic() > deadline:
            return latest
        time.sleep(0.5)

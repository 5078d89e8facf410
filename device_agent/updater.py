"""The agent's A/B updates on its simulated board: verify, install, reboot into a trial, commit or roll back.

The board lives in ``DATA/board``: two slot files and a U-Boot-like
environment (``SimBootloader``), with a factory image in slot A on first start.
An image is a file whose header names its version and the result its
self-test will give (``simimage``), so a release that fails its health check
can be rolled out on purpose. A reboot is simulated in process: the
bootloader picks the slot (a trial slot while its boot count lasts), then the
update driver resumes from its persisted record (``DATA/update.json``), runs
the trial's health checks (self-test, version, gateway reached), and commits or
rolls back. Every outcome is handed to ``on_report`` (which must make it
durable) for the cloud.

Everything here blocks (files, fsync, hook commands): the agent calls it on a
worker thread, never on its event loop. The update machinery is imported only
when an update starts or one is in progress, so an idle agent stays small.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import DeltaError, FirmwareError
from device_agent import simimage

__all__ = ["AgentUpdater"]

log = logging.getLogger("edgefleet.update")

FACTORY_VERSION = "1.0.0"


class AgentUpdater:
    """One device's update flow; ``boot()`` at agent start, ``start()`` when the cloud says so."""

    def __init__(
        self,
        data_dir: Path,
        device_id: str,
        hw: str,
        release_keys: list[str],
        *,
        on_report: Callable[[dict[str, Any]], None],
        link_up: Callable[[], bool],
        now_ms: Callable[[], int],
        gateway_within_s: float = 15.0,
    ) -> None:
        self.board = data_dir / "board"
        self.manifests = data_dir / "manifests"  # the signed manifest of each release installed (for a return to it)
        self.record_path = data_dir / "update.json"
        self.device_id = device_id
        self.hw = hw
        self.release_keys = release_keys
        self.on_report = on_report
        self.link_up = link_up
        self.now_ms = now_ms
        self.gateway_within_s = gateway_within_s
        self._lock = threading.Lock()  # one update flow at a time

    # -- the board -------------------------------------------------------------------

    def _sim(self) -> Any:
        from device_agent.update.bootloader import SimBootloader

        if not (self.board / "bootenv.json").exists():
            factory = simimage.make(FACTORY_VERSION, "ok", 64 * 1024)
            return SimBootloader.create(self.board, {"A": factory, "B": None})
        return SimBootloader(self.board)

    def running(self) -> dict[str, str]:
        """The header of the image the board runs (version and self-test)."""
        sim = self._sim()
        return simimage.info(sim.slot_path(sim.active_slot()).read_bytes()) or {"version": "?", "health": "corrupt"}

    def in_progress(self) -> bool:
        return self.record_path.exists() and json.loads(self.record_path.read_text()).get("state") not in ("idle", None)

    # -- the flow --------------------------------------------------------------------

    def boot(self) -> None:
        """At agent start: resume an update that a reboot or power cut interrupted (no-op otherwise)."""
        if self.in_progress():
            with self._lock:
                self._run(None)

    def check(self, signed: bytes) -> Any:
        """The manifest if this device may install it (signature by a pinned key, expiry, hardware,
        security floor, no downgrade); else ``ManifestError``. Checked before a byte is downloaded."""
        from common.firmware.keys import load_trusted_keys
        from common.firmware.manifest import verify_manifest
        from device_agent.update.states import UpdateRecord
        from device_agent.update.store import RecordStore

        record = RecordStore(self.record_path).load() or UpdateRecord()
        return verify_manifest(signed, load_trusted_keys(self.release_keys), hw=self.hw, now_ms=self.now_ms(),
                               security_floor=record.security_floor, current_version=self.running()["version"],
                               device_id=self.device_id)

    def start(self, manifest_path: str, image_path: str = "", *, delta_path: str = "", allowance_path: str = "") -> str:
        """Verify the signed manifest and install its image; returns what happened, for the command result.

        With ``delta_path`` the new image is rebuilt from the running slot's content and the delta
        (streaming, checked against the manifest's SHA-256 before anything is installed). An older
        version installs only with ``allowance_path``: a downgrade allowance signed by a release key.
        """
        from common.firmware.keys import load_trusted_keys
        from common.firmware.manifest import SignedAllowance, verify_manifest
        from device_agent.update.states import UpdateRecord
        from device_agent.update.store import RecordStore

        with self._lock:
            record = RecordStore(self.record_path).load() or UpdateRecord()
            try:
                allowance = SignedAllowance.from_bytes(Path(allowance_path).read_bytes()) if allowance_path else None
                manifest = verify_manifest(
                    Path(manifest_path).read_bytes(),
                    load_trusted_keys(self.release_keys),
                    hw=self.hw,
                    now_ms=self.now_ms(),
                    security_floor=record.security_floor,
                    current_version=self.running()["version"],
                    device_id=self.device_id,
                    allowance=allowance,
                )
                if delta_path:
                    image_path = self._rebuild(manifest, delta_path)
                self._keep_manifest(manifest.version, Path(manifest_path).read_bytes())
            except (FirmwareError, DeltaError, OSError) as exc:
                from device_agent.update.core import ManifestRejected

                rejected = ManifestRejected(getattr(exc, "version", None) or "?", str(exc))
                self._run(lambda driver: driver.feed(rejected))
                return f"refused: {exc}"
            downgrade = allowance is not None
            self._run(lambda driver: driver.start(manifest, image_path, allow_downgrade=downgrade))
            return f"update to {manifest.version} started"

    def revert(self) -> str:
        """Return to the release in the other slot, the one before the running one (a rollout aborted with
        "return to the previous release"). Its signed manifest, kept when it was installed, is checked again
        (a pinned key's signature, hardware, expiry) and so is the slot's content against it; it then installs
        as an update: trial boot, health check, commit or roll back. The security floor still holds: a release
        below it is refused, as is a slot with no image or no kept manifest (the factory image)."""
        from common.firmware.chunks import verify_image
        from common.firmware.keys import load_trusted_keys
        from common.firmware.manifest import verify_manifest
        from device_agent.update.bootloader import other_slot
        from device_agent.update.states import UpdateRecord
        from device_agent.update.store import RecordStore

        with self._lock:
            sim = self._sim()
            other = sim.slot_path(other_slot(sim.active_slot(), sim.slots))
            info = simimage.info(other.read_bytes()) if other.exists() else None
            if not info:
                return "refused: the other slot holds no release to return to"
            version = info["version"]
            kept = self.manifests / f"{version}.manifest"
            if not kept.exists():
                return f"refused: no signed manifest was kept for {version} (the factory image cannot be returned to)"
            record = RecordStore(self.record_path).load() or UpdateRecord()
            try:
                manifest = verify_manifest(kept.read_bytes(), load_trusted_keys(self.release_keys), hw=self.hw,
                                           now_ms=self.now_ms(), security_floor=record.security_floor,
                                           device_id=self.device_id)
                image = self.board / "revert.img"
                with open(other, "rb") as src, open(image, "wb") as dst:
                    dst.write(src.read(manifest.size))
                verify_image(manifest, image)
            except (FirmwareError, OSError) as exc:
                return f"refused: cannot return to {version}: {exc}"
            self._run(lambda driver: driver.start(manifest, str(image), allow_downgrade=True))
            return f"return to {version} started"

    def _keep_manifest(self, version: str, signed: bytes) -> None:
        """Keep a verified manifest (the newest few) so the device can return to that release later."""
        from common.fileio import write_atomic

        self.manifests.mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifests / f"{version}.manifest", signed, 0o644)
        kept = sorted(self.manifests.glob("*.manifest"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-4]:
            old.unlink(missing_ok=True)

    def _rebuild(self, manifest: Any, delta_path: str) -> str:
        """The new image from the running slot and a delta, in DATA/board/incoming.img; checked against the manifest."""
        from common.delta import apply_delta

        sim = self._sim()
        out = self.board / "incoming.img"
        result = apply_delta(sim.slot_path(sim.active_slot()), delta_path, out,  # within APPLY_MEMORY
                             expect_size=manifest.size, expect_sha256=manifest.sha256)  # the signed manifest's
        if (result.new_size, result.new_sha256) != (manifest.size, manifest.sha256):
            raise DeltaError(f"delta {delta_path!r} rebuilt an image that is not release {manifest.version}'s "
                             f"(SHA-256 {result.new_sha256[:16]}..., the manifest says {manifest.sha256[:16]}...)")
        return str(out)

    def _run(self, first: Callable[[Any], None] | None) -> None:
        """Power the update core on (it learns the booted slot and resumes its record), run ``first``,
        then boot the board and resume each time the flow asks for a reboot."""
        action = first
        for _ in range(16):  # a reboot loop is broken by the record's store counter long before this
            driver = self._driver()
            driver.power_on()
            if not driver.halted and action is not None:
                action(driver)
            if not driver.halted:
                return
            slot = driver.bootloader.power_on()  # the bootloader runs: trial slot, or fall back
            log.info("rebooted", extra={"slot": slot, "version": self.running()["version"]})
            action = None

    def _driver(self) -> Any:
        from device_agent.update.core import UpdateCore
        from device_agent.update.driver import UpdateDriver
        from device_agent.update.health import HealthResult
        from device_agent.update.store import RecordStore

        sim = self._sim()

        def health(version: str, timeout_s: float) -> HealthResult:
            info = self.running()
            if info["health"] != "ok":
                return HealthResult(False, f"self-test of {info['version']} failed ({info['health']})")
            if info["version"] != version:
                return HealthResult(False, f"running version {info['version']!r} is not the manifest's {version!r}")
            deadline = time.monotonic() + min(timeout_s, self.gateway_within_s)
            while not self.link_up():
                if time.monotonic() > deadline:
                    return HealthResult(False, f"did not reach the gateway within {self.gateway_within_s:g} s")
                time.sleep(0.2)  # a worker thread waiting for the event loop's link state
            return HealthResult(True)

        def report(r: Any) -> None:
            self.on_report({"version": r.version, "outcome": r.outcome, "reason": r.reason, "running_version": r.running_version})

        return UpdateDriver(
            UpdateCore(self.device_id, self.hw, health_timeout_s=60.0),
            RecordStore(self.record_path),
            sim,
            {s: sim.slot_path(s) for s in sim.slots},
            read_version=lambda: self.running()["version"],
            health=health,
            send_report=report,
            reboot=lambda: None,  # the driver halts; _run boots the board
        )

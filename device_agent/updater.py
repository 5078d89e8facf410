"""The agent's A/B updates on its board: verify, install, reboot into a trial, commit or roll back.

The board is a real one described by a profile (``device_agent.board``: GRUB or
U-Boot, slot devices, the running system's slot and version, health commands,
the reboot command) or, for the demo and tests, the simulated board in
``DATA/board`` (the default). The update record is ``DATA/update.json``; every
outcome is handed to ``on_report`` (which must make it durable) for the cloud.
A release's manifest names its update module: ``rootfs-image`` (and ``swupdate``
on the simulated board) go to the board, ``file`` and ``script`` to their own
boards (``device_agent.board.modules``) with their own records in ``DATA/modules/``.

A reboot on the simulated board is played in process: the simulated
bootloader picks the slot, then the flow resumes from its record. On a real
board the record is durable, the profile's reboot command runs and
``on_reboot`` is called (the agent stops); on the next start ``boot()`` finds
the slot the bootloader chose (the trial, or the old one if it never came up),
runs the health checks, commits or rolls back, and reports.

Everything here blocks (files, fsync, hook commands): the agent calls it on a
worker thread, never on its event loop. The update machinery is imported only
when an update starts or one is in progress, so an idle agent stays small.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.errors import DeltaError, EdgeFleetError, FirmwareError
from device_agent import simimage
from device_agent.board.boards import FACTORY_VERSION, Board, SimBoard

__all__ = ["FACTORY_VERSION", "AgentUpdater"]

log = logging.getLogger("edgefleet.update")


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
        board: Board | None = None,
        on_reboot: Callable[[], None] = lambda: None,
        modules: dict[str, tuple[Any, Path]] | None = None,
    ) -> None:
        self.board: Any = board or SimBoard(data_dir / "board", link_up=link_up, gateway_within_s=gateway_within_s)
        self.work = data_dir / "board"  # images rebuilt from deltas, a slot copied for a return
        self.manifests = data_dir / "manifests"  # the signed manifest of each release installed (for a return to it)
        self.record_path = data_dir / "update.json"
        # update module -> (its board, its update record): the board's own modules, then file/script if enabled
        self.boards: dict[str, tuple[Any, Path]] = {m: (self.board, self.record_path) for m in self.board.update_modules}
        self.boards |= modules or {}
        self.device_id = device_id
        self.hw = hw
        self.release_keys = release_keys
        self.on_report = on_report
        self.on_reboot = on_reboot
        self.now_ms = now_ms
        self._lock = threading.Lock()  # one update flow at a time

    # -- the board -------------------------------------------------------------------

    def running(self) -> dict[str, str]:
        """What the board runs: its version (and, on the simulated board, its image's self-test)."""
        if isinstance(self.board, SimBoard):
            return self.board.running()
        return {"version": self.board.running_version()}

    def reboot_board(self) -> None:
        """Reboot now (the ``reboot`` command): a real board runs its reboot command; then the agent stops."""
        with self._lock:  # never in the middle of an update's step
            if not self.board.in_process_reboot:
                try:
                    self.board.reboot()
                except EdgeFleetError as exc:
                    log.error("reboot command failed; stopping the agent anyway", extra={"error": str(exc)})
            self.on_reboot()

    @property
    def update_modules(self) -> tuple[str, ...]:
        """What this device installs (its inventory's ``update_modules``)."""
        return tuple(self.boards)

    def in_progress(self, record_path: Path | None = None) -> bool:
        paths = [record_path] if record_path else {rec for _, rec in self.boards.values()}
        return any(p.exists() and json.loads(p.read_text()).get("state") not in ("idle", None) for p in paths)

    def _route(self, signed: bytes) -> tuple[Any, Path]:
        """The board and record of the update module a manifest names (read before it is verified, only to
        route it: the verification that follows is the one that counts); an unknown module: the board's."""
        from common.firmware.manifest import SignedManifest

        try:
            module = SignedManifest.from_bytes(signed).unverified().module
        except EdgeFleetError:
            return self.board, self.record_path
        return self.boards.get(module, (self.board, self.record_path))

    # -- the flow --------------------------------------------------------------------

    def boot(self) -> None:
        """At agent start: confirm the running slot, and resume an update a reboot or power cut interrupted."""
        with self._lock:
            seen: set[Path] = set()
            for board, record in self.boards.values():
                if record in seen:
                    continue
                seen.add(record)
                if self.in_progress(record) or (board is self.board and not isinstance(board, SimBoard)):
                    self._run(None, board, record)

    def check(self, signed: bytes) -> Any:
        """The manifest if this device may install it (signature by a pinned key, expiry, hardware,
        security floor, no downgrade); else ``ManifestError``. Checked before a byte is downloaded."""
        from common.firmware.keys import load_trusted_keys
        from common.firmware.manifest import verify_manifest
        from device_agent.update.states import UpdateRecord
        from device_agent.update.store import RecordStore

        board, record_path = self._route(signed)
        record = RecordStore(record_path).load() or UpdateRecord()
        return verify_manifest(signed, load_trusted_keys(self.release_keys), hw=self.hw, now_ms=self.now_ms(),
                               security_floor=record.security_floor, current_version=board.running_version(),
                               device_id=self.device_id)

    def start(self, manifest_path: str, image_path: str = "", *, delta_path: str = "", allowance_path: str = "") -> str:
        """Verify the signed manifest and install its image; returns what happened, for the command result.

        The image is the raw slot content, or that content zstd-compressed (decompressed as it streams
        into the slot). With ``delta_path`` the new image is rebuilt from the running slot's content and
        the delta (streaming, checked against the manifest's SHA-256 before anything is installed). An
        older version installs only with ``allowance_path``: a downgrade allowance signed by a release key.
        """
        from common.firmware.keys import load_trusted_keys
        from common.firmware.manifest import SignedAllowance, verify_manifest
        from device_agent.update.states import UpdateRecord
        from device_agent.update.store import RecordStore

        with self._lock:
            board, record_path = self.board, self.record_path
            try:
                signed = Path(manifest_path).read_bytes()
                board, record_path = self._route(signed)
                record = RecordStore(record_path).load() or UpdateRecord()
                allowance = SignedAllowance.from_bytes(Path(allowance_path).read_bytes()) if allowance_path else None
                manifest = verify_manifest(
                    signed,
                    load_trusted_keys(self.release_keys),
                    hw=self.hw,
                    now_ms=self.now_ms(),
                    security_floor=record.security_floor,
                    current_version=board.running_version(),
                    device_id=self.device_id,
                    allowance=allowance,
                )
                self._check_module(manifest)
                if delta_path:
                    image_path = self._rebuild(manifest, delta_path, board)
                self._keep_manifest(manifest.version, signed)
            except (FirmwareError, DeltaError, OSError) as exc:
                from device_agent.update.core import ManifestRejected

                rejected = ManifestRejected(getattr(exc, "version", None) or "?", str(exc))
                self._run(lambda driver: driver.feed(rejected), board, record_path)
                return f"refused: {exc}"
            downgrade = allowance is not None
            self._run(lambda driver: driver.start(manifest, image_path, allow_downgrade=downgrade), board, record_path)
            return f"update to {manifest.version} started"

    def _check_module(self, manifest: Any) -> None:
        module = getattr(manifest, "module", "rootfs-image")
        if module not in self.boards:
            from common.errors import ManifestError

            raise ManifestError(manifest.version, "unsupported-module", f"it is for the update module {module!r}; "
                                f"this device installs {', '.join(self.boards)}")

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
            bl = self.board.bootloader()
            other = self.board.slot_paths()[other_slot(bl.active_slot(), bl.slots)]
            found = self._release_in(other)
            if isinstance(found, str):
                return found
            version, kept = found
            record = RecordStore(self.record_path).load() or UpdateRecord()
            try:
                manifest = verify_manifest(kept.read_bytes(), load_trusted_keys(self.release_keys), hw=self.hw,
                                           now_ms=self.now_ms(), security_floor=record.security_floor,
                                           device_id=self.device_id)
                self.work.mkdir(parents=True, exist_ok=True)
                image = self.work / "revert.img"
                with open(other, "rb") as src, open(image, "wb") as dst:
                    dst.write(src.read(manifest.size))
                verify_image(manifest, image)
            except (FirmwareError, OSError) as exc:
                return f"refused: cannot return to {version}: {exc}"
            self._run(lambda driver: driver.start(manifest, str(image), allow_downgrade=True))
            return f"return to {version} started"

    def _release_in(self, slot: Path) -> tuple[str, Path] | str:
        """(version, kept manifest) of the release a slot holds, or why there is none. The simulated board
        reads the image's header; a real board matches the slot's content against the kept manifests."""
        if isinstance(self.board, SimBoard):
            info = simimage.info(slot.read_bytes()) if slot.exists() else None
            if not info:
                return "refused: the other slot holds no release to return to"
            kept = self.manifests / f"{info['version']}.manifest"
            if not kept.exists():
                return (f"refused: no signed manifest was kept for {info['version']} "
                        "(the factory image cannot be returned to)")
            return info["version"], kept
        from common.fileio import sha256_file
        from common.firmware.manifest import SignedManifest

        for kept in sorted(self.manifests.glob("*.manifest"), key=lambda p: -p.stat().st_mtime):
            try:
                m = SignedManifest.from_bytes(kept.read_bytes()).unverified()
                if sha256_file(slot, m.size) == m.sha256:
                    return m.version, kept
            except (EdgeFleetError, OSError):
                continue
        return "refused: the other slot holds no release whose signed manifest was kept (the factory image?)"

    def _keep_manifest(self, version: str, signed: bytes) -> None:
        """Keep a verified manifest (the newest few) so the device can return to that release later."""
        from common.fileio import write_atomic

        self.manifests.mkdir(parents=True, exist_ok=True)
        write_atomic(self.manifests / f"{version}.manifest", signed, 0o644)
        kept = sorted(self.manifests.glob("*.manifest"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-4]:
            old.unlink(missing_ok=True)

    def _rebuild(self, manifest: Any, delta_path: str, board: Any) -> str:
        """The new image from the running slot and a delta, in DATA/board/incoming.img; checked against the manifest."""
        from common.delta import apply_delta

        bl = board.bootloader()
        self.work.mkdir(parents=True, exist_ok=True)
        out = self.work / "incoming.img"
        result = apply_delta(self._running_image(board, bl.active_slot()), delta_path, out,  # within APPLY_MEMORY
                             expect_size=manifest.size, expect_sha256=manifest.sha256)  # the signed manifest's
        if (result.new_size, result.new_sha256) != (manifest.size, manifest.sha256):
            raise DeltaError(f"delta {delta_path!r} rebuilt an image that is not release {manifest.version}'s "
                             f"(SHA-256 {result.new_sha256[:16]}..., the manifest says {manifest.sha256[:16]}...)")
        return str(out)

    def _running_image(self, board: Any, slot: str) -> Path:
        """The running release's image, the old image of a delta: the slot itself, or (a partition larger than
        the image, as a real board's are) its first bytes, as many as the running release's kept manifest says."""
        source = Path(board.slot_paths()[slot])
        if isinstance(board, SimBoard):
            return source
        from common.firmware.manifest import SignedManifest

        kept = self.manifests / f"{board.running_version()}.manifest"
        try:
            size = SignedManifest.from_bytes(kept.read_bytes()).unverified().size
        except (OSError, EdgeFleetError):
            return source  # not installed by this agent (the factory image): the delta names the size it needs
        if source.is_file() and source.stat().st_size == size:
            return source
        copy = self.work / "running.img"
        with open(source, "rb") as src, open(copy, "wb") as dst:
            left = size
            while left and (block := src.read(min(left, 1 << 20))):
                dst.write(block)
                left -= len(block)
        return copy

    def _run(self, first: Callable[[Any], None] | None, board: Any = None, record_path: Path | None = None) -> None:
        """Power the update core on (it learns the booted slot and resumes its record), run ``first``;
        when the flow asks for a reboot: on the simulated board boot it and resume, on a real one run the
        reboot command and tell the agent to stop (``on_reboot``)."""
        board = board or self.board
        record_path = record_path or self.record_path
        record_path.parent.mkdir(parents=True, exist_ok=True)
        action = first
        for _ in range(16):  # a reboot loop is broken by the record's store counter long before this
            driver = self._driver(board, record_path)
            driver.power_on()
            if not driver.halted and action is not None:
                action(driver)
            if not driver.halted:
                return
            if not board.in_process_reboot:
                try:
                    board.reboot()
                except EdgeFleetError as exc:  # the record is durable: the next start resumes it either way
                    log.error("reboot command failed; stopping the agent anyway", extra={"error": str(exc)})
                log.info("rebooting", extra={"record": str(self.record_path)})
                self.on_reboot()
                return
            board.reboot()
            log.info("rebooted", extra={"version": board.running_version()})
            action = None

    def _driver(self, board: Any, record_path: Path) -> Any:
        from device_agent.update.core import UpdateCore
        from device_agent.update.driver import UpdateDriver
        from device_agent.update.store import RecordStore

        def report(r: Any) -> None:
            self.on_report({"version": r.version, "outcome": r.outcome, "reason": r.reason, "running_version": r.running_version})

        return UpdateDriver(
            UpdateCore(self.device_id, self.hw, health_timeout_s=board.health_timeout_s),
            RecordStore(record_path),
            board.bootloader(),
            board.slot_paths(),
            read_version=board.running_version,
            health=board.health,
            send_report=report,
            reboot=lambda: None,  # the driver halts; _run reboots the board
            after_install=getattr(board, "after_install", None),
        )

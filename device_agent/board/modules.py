"""Update modules beside the A/B rootfs: ``file`` and ``script``, on the same state machine as a board.

Each module is a board to the update flow (``device_agent.board.boards.Board``): two slots, a boot
environment with a trial and a fall back, a running version, health checks and a reboot. So a release
for a module goes through the same steps, reports and power-cut guarantees as a rootfs image: verify,
install into the inactive slot (marked bad first, read back against the signed hash), arm a trial,
"reboot", check, commit or roll back. The environment is the simulated bootloader's (``SimBootloader``,
a JSON file replaced atomically) kept in ``<where>.slots/``; a "reboot" is played in process.

``file``: one file or directory replaced atomically, the previous kept for a roll back. ``target``
(e.g. ``/opt/app/current``) becomes a symlink to the running slot's copy; a reboot flips it (a new
symlink renamed over the old one) and runs the restart command. A directory's artifact is a tar archive,
extracted into the slot once it verified. A target that is a plain file or directory is adopted into
slot A on first use.

``script``: an executable speaking the update-module protocol (docs/UPDATES.md), in the spirit of
Mender's: ``EXE STATE WORKDIR`` with ``WORKDIR/payload`` (the verified artifact) and ``WORKDIR/version``;
states ``Download``, ``ArtifactInstall``, ``NeedsArtifactReboot`` (prints Yes or No), ``ArtifactVerify``
(the trial's health check), ``ArtifactCommit`` and ``ArtifactRollback``; exit 0 is success. When the
module needs a reboot the board's reboot command runs and the agent stops; it resumes on its next start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import BootloaderError, UpdateError
from common.fileio import fsync_dir, write_atomic
from device_agent.board.probes import run_reboot
from device_agent.board.profile import BoardProfile

if TYPE_CHECKING:
    from device_agent.update.health import HealthResult

__all__ = ["INITIAL_VERSION", "FileModule", "ScriptModule", "module_boards"]

INITIAL_VERSION = "0.0.0"  # what a module runs before its first update (adopted content)


def _record_version(record_path: Path) -> str:
    try:
        return str(json.loads(record_path.read_text())["target_version"])
    except (OSError, ValueError, KeyError) as exc:
        raise UpdateError(f"update record {str(record_path)!r} names no target version: {exc}") from exc


class _ModuleBoard:
    """What both modules share: the environment in ``root``, a version file per slot, health, reboot."""

    in_process_reboot = True
    health_timeout_s = 120.0
    module = ""

    def __init__(self, root: Path, record_path: Path, profile: BoardProfile) -> None:
        self.root, self.record_path, self.profile = root, record_path, profile

    def _env(self) -> Any:
        from device_agent.update.bootloader import SimBootloader

        if not (self.root / "bootenv.json").exists():
            self._adopt()
            return SimBootloader.create(self.root, {"A": self._placeholder(), "B": None})
        return SimBootloader(self.root)

    def _adopt(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _placeholder(self) -> bytes:
        path = self.root / "slot_A.img"
        return path.read_bytes() if path.exists() and path.stat().st_size else b"\0"

    @property
    def update_modules(self) -> tuple[str, ...]:
        return (self.module,)

    def slot_paths(self) -> dict[str, Path]:
        return {s: self.root / f"slot_{s}.img" for s in ("A", "B")}

    def running_version(self) -> str:
        path = self.root / f"version_{self.bootloader().active_slot()}"
        return path.read_text().strip() if path.exists() else INITIAL_VERSION

    def slot_versions(self) -> dict[str, str]:
        return {"active": self.bootloader().active_slot()}

    def after_install(self, slot: str) -> None:
        write_atomic(self.root / f"version_{slot}", _record_version(self.record_path).encode(), 0o644)

    def _checks(self) -> list[Any]:
        from device_agent.update.health import version_matches

        return [version_matches(self.running_version)]

    def health(self, version: str, timeout_s: float) -> HealthResult | None:
        from device_agent.update.health import run_health_checks

        return run_health_checks(self._checks(), version, timeout_s=min(timeout_s, self.health_timeout_s))


class FileModule(_ModuleBoard):
    module = "file"

    def __init__(self, profile: BoardProfile, record_path: Path) -> None:
        self.target = Path(profile.file_target)
        self.directory = profile.file_kind == "directory"
        super().__init__(Path(f"{self.target}.slots"), record_path, profile)

    def content(self, slot: str) -> Path:
        """What the target points at when ``slot`` runs: the slot file, or the directory extracted from it."""
        return self.root / (f"slot_{slot}.d" if self.directory else f"slot_{slot}.img")

    def _adopt(self) -> None:
        """First use: the target's present content becomes slot A (a directory is moved, a file copied)."""
        super()._adopt()
        if self.target.is_symlink() or not self.target.exists():
            if self.directory:
                self.content("A").mkdir(exist_ok=True)
            return
        if self.directory:
            os.replace(self.target, self.content("A"))  # then the symlink; bootloader() repairs a cut between
        else:
            write_atomic(self.root / "slot_A.img", self.target.read_bytes(), 0o644)

    def bootloader(self) -> Any:
        env = self._env()
        self._point(env.active_slot())
        return env

    def _point(self, slot: str) -> None:
        """The target is a symlink to the running slot's content (replaced atomically when it is not)."""
        want = str(self.content(slot))
        if self.target.is_symlink() and os.readlink(self.target) == want:
            return
        tmp = self.target.with_name(f".{self.target.name}.edgefleet-link")
        tmp.unlink(missing_ok=True)
        os.symlink(want, tmp)
        try:
            os.replace(tmp, self.target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BootloaderError(f"Failed switching {self.target} to slot {slot}: {exc}") from exc
        fsync_dir(self.target.parent)

    def after_install(self, slot: str) -> None:
        if self.directory:
            out, tmp = self.content(slot), self.root / f"slot_{slot}.d.new"
            shutil.rmtree(tmp, ignore_errors=True)
            if not hasattr(tarfile, "data_filter"):  # Python 3.11.4+: never unpack a bundle without the filter
                raise UpdateError("Failed unpacking the file module's archive: this Python has no tarfile data filter")
            try:
                with tarfile.open(self.slot_paths()[slot]) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise UpdateError(f"Failed unpacking the file module's archive into slot {slot}: {exc}") from exc
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
            fsync_dir(self.root)
        super().after_install(slot)

    def _checks(self) -> list[Any]:
        from device_agent.update.health import hook_commands

        checks = super()._checks()
        if self.profile.file_health_commands:
            checks.append(hook_commands(self.profile.file_health_commands,
                                        timeout_s=self.profile.health_command_timeout_s))
        return checks

    def reboot(self) -> None:
        """The module's "reboot": the environment picks the slot, the target is flipped, the app restarted."""
        env = self._env()
        self._point(env.power_on())
        if self.profile.file_restart_command:
            run_reboot(self.profile.file_restart_command)


class ScriptModule(_ModuleBoard):
    module = "script"

    def __init__(self, profile: BoardProfile, record_path: Path, root: Path) -> None:
        super().__init__(root, record_path, profile)
        self.exe = profile.script_module
        self.work = self.root / "work"

    def _run(self, state: str, doing: str) -> str:
        try:
            done = subprocess.run([self.exe, state, str(self.work)], capture_output=True, text=True, check=False,
                                  timeout=self.profile.health_command_timeout_s, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BootloaderError(f"Failed {doing}: update module {self.exe!r} {state}: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
            raise BootloaderError(f"Failed {doing}: update module {self.exe!r} {state} exited with "
                                  f"{done.returncode}: {tail[0]}".rstrip(": "))
        return done.stdout.strip()

    def bootloader(self) -> Any:
        return _ScriptEnv(self, self._env())

    def after_install(self, slot: str) -> None:
        super().after_install(slot)
        self.work.mkdir(parents=True, exist_ok=True)
        payload = self.work / "payload"
        payload.unlink(missing_ok=True)
        os.symlink(self.slot_paths()[slot], payload)
        write_atomic(self.work / "version", _record_version(self.record_path).encode(), 0o644)
        write_atomic(self.work / f"installed_{slot}", b"", 0o644)  # a roll back now undoes what the script did
        self._run("Download", f"preparing slot {slot}")
        self._run("ArtifactInstall", f"installing into slot {slot}")
        needs = self._run("NeedsArtifactReboot", f"asking whether slot {slot} needs a reboot")
        write_atomic(self.work / "needs-reboot", b"1" if needs.lower().startswith("yes") else b"0", 0o644)

    @property
    def in_process_reboot(self) -> bool:  # type: ignore[override]
        flag = self.work / "needs-reboot"
        return not (flag.exists() and flag.read_bytes() == b"1")

    def _checks(self) -> list[Any]:
        from device_agent.update.health import HealthResult

        def verify(expected_version: str) -> HealthResult:
            try:
                self._run("ArtifactVerify", f"checking {expected_version}")
            except BootloaderError as exc:
                return HealthResult(False, str(exc))
            return HealthResult(True)

        return [*super()._checks(), verify]

    def reboot(self) -> None:
        self._env().power_on()
        if not self.in_process_reboot:
            run_reboot(self.profile.reboot_command)


class _ScriptEnv:
    """The Bootloader port over the module's environment, telling the script to commit or roll back."""

    def __init__(self, module: ScriptModule, env: Any) -> None:
        self.module, self.env, self.slots = module, env, env.slots

    def active_slot(self) -> str:
        return self.env.active_slot()

    def boot_state(self) -> Any:
        return self.env.boot_state()

    def set_try_once(self, slot: str) -> None:
        self.env.set_try_once(slot)

    def mark_good(self, slot: str) -> None:
        if self.env.boot_state().trial == slot:
            self.module._run("ArtifactCommit", f"committing slot {slot}")
            (self.module.work / f"installed_{slot}").unlink(missing_ok=True)
        self.env.mark_good(slot)

    def mark_bad(self, slot: str) -> None:
        installed = self.module.work / f"installed_{slot}"
        if installed.exists():  # the script installed it (or began to): undo that first
            self.module._run("ArtifactRollback", f"rolling back slot {slot}")
            installed.unlink()
        self.env.mark_bad(slot)


def module_boards(profile: BoardProfile, data_dir: Path) -> dict[str, tuple[Any, Path]]:
    """The update modules the profile enables beyond the board's own: module -> (board, record path)."""
    out: dict[str, tuple[Any, Path]] = {}
    if profile.file_target:
        record = data_dir / "modules" / "file.json"
        out["file"] = (FileModule(profile, record), record)
    if profile.script_module:
        record = data_dir / "modules" / "script.json"
        out["script"] = (ScriptModule(profile, record, data_dir / "modules" / "script"), record)
    return out

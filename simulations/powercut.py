"""Crash-point harness: cut power at every persisted step and mid-write, then power on, until the update ends.

For each seed a simulated device (``SimBootloader``: two slot files and a
boot environment) runs the real ``UpdateCore`` and ``UpdateDriver`` to install
a new image. Power is cut by raising ``PowerCut`` (a BaseException: nothing
catches it) right after a chosen durable write: the update record, the boot
environment, or a block of the slot at a random byte offset (the block is
written only up to that offset). Everything in memory is dropped; the next
"power on" boots through the simulated bootloader and resumes from what is on
disk. Images are chosen per seed: healthy (most), failing their health hook,
hanging it, crashing at boot, reporting the wrong version, or tampered (the file
no longer matches the manifest).

After the update ends the device is powered on twice more, and checked:

* bricked: no slot boots, or the slot that boots (or any slot marked good) does
  not hold one complete, known image;
* inconsistent: no outcome reported, outcomes disagree, the record is not idle,
  the running image is not the one the outcome implies (new after committed,
  old after rolled_back or failed), a bad or tampered image was committed.

    python -m simulations.powercut --seeds 0:500 --json
    python -m simulations.powercut --seeds 0:100 --board grub --json   # the real grub-editenv (or uboot:
                                                                       # fw_printenv/fw_setenv; grub-emu: the
                                                                       # boot script run by the real GRUB)

With ``--board grub|uboot`` the device's boot environment is a real one, read
and written by the real tools, and the bootloader's script (RAUC's) picks the
slot at each power-on (``simulations.powercut_board``); an environment write
that power is cut after is a real tool's write.

The last line with ``--json`` is one JSON object: runs, bricked, inconsistent,
committed, rolled_back, failed, cuts, ... ``--child DIR`` runs one boot of a
device laid out by ``make_scenario`` (the SIGKILL test kills it at random).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import BootloaderError
from device_agent import simimage
from device_agent.update.bootloader import SimBootloader, other_slot
from simulations.powercut_board import BOARDS, ToolBoard
from device_agent.update.core import UpdateCore, UpdateReport
from device_agent.update.driver import UpdateDriver
from device_agent.update.health import HealthResult
from device_agent.update.plan import LocalManifest
from device_agent.update.states import State
from device_agent.update.store import RecordStore

__all__ = ["PowerCut", "Scenario", "check_device", "main", "make_scenario", "run_seed"]

HW = "sim-board-1"
KINDS = ["ok", "fail", "hang", "crash", "wrong-version", "tampered"]
WEIGHTS = [62, 12, 6, 8, 6, 6]
MAX_BOOTS = 40
_SLOT = re.compile(r"slot [A-Z]\b")


class PowerCut(BaseException):
    """The power went off: nothing after this point happened, and memory is gone."""


class Rebooting(BaseException):
    """The device reboots (the driver asked for it)."""


def make_image(rng: random.Random, version: str, health: str, size: int) -> bytes:
    return simimage.make(version, health, size, rng)


image_info = simimage.info


@dataclass
class Scenario:
    """A device about to be updated; everything the checker needs to judge the end state."""

    root: str
    kind: str
    old_version: str
    new_version: str
    manifest: dict
    images: dict[str, str] = field(default_factory=dict)  # sha256 -> role (old, new, older)
    board: str = "sim"  # sim, or grub / uboot (the real tools)

    @property
    def image_path(self) -> str:
        return str(Path(self.root) / "fw.img")

    def save(self) -> None:
        (Path(self.root) / "scenario.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Scenario:
        return cls(**json.loads((Path(root) / "scenario.json").read_text()))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_scenario(root: Path, seed: int, *, size: int | None = None, kind: str | None = None,
                  board: str = "sim") -> Scenario:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    kind = kind or rng.choices(KINDS, WEIGHTS)[0]
    size = size or rng.randrange(64, 257) * 1024
    primary = rng.choice("AB")
    old = make_image(rng, "1.0.0", "ok", rng.randrange(64, 257) * 1024)
    older = make_image(rng, "0.9.0", "ok", 64 * 1024) if rng.random() < 0.5 else None
    new_version = "1.1.0"
    new = make_image(rng, "1.0.9" if kind == "wrong-version" else new_version,
                     kind if kind in ("fail", "hang", "crash") else "ok", size)
    if board == "sim":
        SimBootloader.create(root, {primary: old, other_slot(primary): older}, primary=primary, bootlimit=3)
    else:
        ToolBoard.create(root, board, {primary: old, other_slot(primary): older}, primary=primary, bootlimit=3)
    manifest = {"version": new_version, "hw": [HW], "size": len(new), "sha256": _sha(new), "security_version": 2,
                "chunk_size": rng.choice([4096, 16384, 65536])}
    stored = bytearray(new)
    if kind == "tampered":
        stored[rng.randrange(len(simimage.MAGIC) + 64, len(stored))] ^= 0x01
    (root / "fw.img").write_bytes(bytes(stored))
    images = {_sha(old): "old", _sha(new): "new"}
    if older:
        images[_sha(older)] = "older"
    sc = Scenario(str(root), kind, "1.0.0", new_version, manifest, images, board)
    sc.save()
    return sc


class Cutter:
    """Counts crash opportunities of each kind and cuts power at the chosen ordinals.

    Kinds: ``record`` (right after the update record is durable), ``env`` (after
    a boot environment write), ``slot-write`` (inside a block of the slot, at a
    random byte offset). ``hits`` counts the cuts by where they landed.
    """

    def __init__(self, rng: random.Random, targets: dict[str, set[int]]) -> None:
        self.rng, self.targets = rng, targets
        self.seen = Counter[str]()
        self.hits = Counter[str]()

    def _due(self, kind: str) -> bool:
        self.seen[kind] += 1
        return self.seen[kind] in self.targets.get(kind, ())

    def point(self, kind: str, label: str) -> None:
        if self._due(kind):
            self.hits[f"{kind}:{label}"] += 1
            raise PowerCut(label)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self._due("slot-write") and len(data) > 1:
            os.write(fd, data[: self.rng.randrange(1, len(data))])
            self.hits["slot-write"] += 1
            raise PowerCut("slot-write")
        return os.write(fd, data)


Device = SimBootloader | ToolBoard


def open_device(sc: Scenario, after_write: Callable[[str], None] | None = None) -> Device:
    if sc.board == "sim":
        return SimBootloader(sc.root, after_write=after_write)
    return ToolBoard(sc.root, sc.board, after_write=after_write)


def bootable(dev: Device) -> set[str]:
    """The slots the bootloader may boot (good, or armed for a trial)."""
    if isinstance(dev, ToolBoard):
        return dev.bootable()
    state = dev.boot_state()
    return set(state.good) | ({state.trial} if state.trial else set())


def slot_problems(sc: Scenario, sim: Device) -> list[str]:
    """Slots the bootloader may boot that do not hold one complete, known image."""
    return [
        f"slot {s} is bootable but holds no complete known image"
        for s in sorted(bootable(sim))
        if _sha(_slot_bytes(sim, s)) not in sc.images
    ]


def _slot_bytes(sim: Device, slot: str) -> bytes:
    return sim.slot_path(slot).read_bytes()


def make_driver(sc: Scenario, sim: Device, reports: list[UpdateReport], cutter: Cutter | None,
                *, sync_every: int = 4 << 20) -> UpdateDriver:
    def running_info() -> dict[str, str]:
        return image_info(_slot_bytes(sim, sim.active_slot())) or {"version": "?", "health": "corrupt"}

    def health(version: str, timeout_s: float) -> HealthResult | None:
        info = running_info()
        match info["health"]:
            case "crash":
                raise PowerCut("the new image crashed at boot")  # a watchdog reset, as far as the device knows
            case "hang":
                return None
            case "fail":
                return HealthResult(False, "hook 'selftest' exited with 1")
        if info["version"] != version:
            return HealthResult(False, f"running version {info['version']!r} is not the manifest's {version!r}")
        return HealthResult(True)

    def reboot() -> None:
        raise Rebooting()

    store = RecordStore(Path(sc.root) / "update.json",
                        after_save=(lambda r: cutter.point("record", r.state.value)) if cutter else None)
    return UpdateDriver(
        UpdateCore("sim-device", HW, health_timeout_s=60.0), store, sim,
        {s: sim.slot_path(s) for s in sim.slots},
        read_version=lambda: running_info()["version"],
        health=health,
        send_report=reports.append,
        reboot=reboot,
        clock=lambda: 0.0,
        write=cutter.write if cutter else os.write,
        sync_every=sync_every,
    )


def boot_once(
    sc: Scenario, reports: list[UpdateReport], cutter: Cutter | None, *, sync_every: int = 4 << 20
) -> tuple[str, list[str]]:
    """One power-on of the device: ('done' | 'reboot' | 'cut' | 'bricked', slots that would brick it)."""
    on_env = (lambda doing: cutter.point("env", _SLOT.sub("slot", doing))) if cutter else None
    sim = open_device(sc, on_env)
    latent: list[str] = []
    try:
        sim.power_on()
        latent = slot_problems(sc, sim)
        drv = make_driver(sc, sim, reports, cutter, sync_every=sync_every)
        drv.power_on()
        if drv.core.state is State.IDLE and not reports:
            drv.start(LocalManifest(**sc.manifest), sc.image_path)
    except BootloaderError as exc:
        if "bricked" in str(exc):
            return "bricked", latent
        raise
    except PowerCut:
        return "cut", latent
    except Rebooting:
        return "reboot", latent
    if drv.core.state is State.IDLE and reports:
        return "done", latent
    raise RuntimeError(f"update stalled in state {drv.core.state.value} without asking to reboot")


def check_device(sc: Scenario, reports: list[UpdateReport]) -> tuple[bool, list[str]]:
    """Power on twice more (no cuts) and judge: (bricked, inconsistencies)."""
    sim = open_device(sc)
    booted: list[str] = []
    for _ in range(2):
        try:
            booted.append(sim.power_on())
        except BootloaderError:
            return True, []
        extra: list[UpdateReport] = []
        drv = make_driver(sc, sim, extra, None)
        drv.power_on()
    good = bootable(sim)
    roles = {s: sc.images.get(_sha(_slot_bytes(sim, s))) for s in sim.slots}
    bricked = roles[booted[-1]] is None or booted[-1] not in good or any(roles[s] is None for s in good)
    problems = []
    if booted[0] != booted[1]:
        problems.append(f"boots alternate between {booted}")
    outcomes = {r.outcome for r in reports}
    record = RecordStore(Path(sc.root) / "update.json").load()
    if len(outcomes) != 1:
        problems.append(f"outcomes reported: {sorted(outcomes) or 'none'}")
    elif record is None or record.state is not State.IDLE:
        problems.append(f"record not idle at the end: {record and record.state.value}")
    else:
        outcome = outcomes.pop()
        running = roles[booted[-1]]
        if outcome == "committed":
            if running != "new" or record.installed_version != sc.new_version:
                problems.append(f"committed but running the {running} image, record says {record.installed_version}")
            if sc.kind != "ok":
                problems.append(f"a {sc.kind} image was committed")
        elif (running, record.installed_version) not in _ROLLED_BACK_TO[sc.board]:
            problems.append(f"{outcome} but running the {running} image, record says {record.installed_version}")
        if sc.kind == "tampered" and outcome != "failed":
            problems.append(f"a tampered image ended {outcome}")
    return bricked, problems


# After a roll back (or a failure) the device runs the image it ran when the update started, and the record
# says so. That is the old image, except on GRUB: its script gives a slot one try, so a power cut between a
# boot and the agent's mark-good of the running slot makes the next boot fall back to the other slot (RAUC's
# GRUB scheme) when it holds a good image (the older one): an update can then start from there.
_OLD, _OLDER = ("old", "1.0.0"), ("older", "0.9.0")
_ROLLED_BACK_TO = {"sim": {_OLD}, "uboot": {_OLD}, "grub": {_OLD, _OLDER}, "grub-emu": {_OLD, _OLDER}}


def run_seed(seed: int, root: Path, board: str = "sim") -> dict:
    rng = random.Random(seed ^ 0x5EED)
    sc = make_scenario(root, seed, board=board)
    blocks = -(-sc.manifest["size"] // sc.manifest["chunk_size"])
    limits = {"record": 13, "env": 9, "slot-write": blocks}
    targets: dict[str, set[int]] = {}
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
        kind = rng.choice(sorted(limits))
        targets.setdefault(kind, set()).add(rng.randrange(1, limits[kind] + 1))
    cutter = Cutter(rng, targets)
    reports: list[UpdateReport] = []
    result: dict = {"seed": seed, "kind": sc.kind, "bricked": False, "problems": [], "outcome": None, "boots": 0}
    for _ in range(MAX_BOOTS):
        result["boots"] += 1
        how, latent = boot_once(sc, reports, cutter)
        if latent:
            result["bricked"] = True
            result["problems"] += [f"boot {result['boots']}: {p}" for p in latent]
        if how == "bricked":
            result["bricked"] = True
            break
        if how == "done":
            break
    else:
        result["problems"].append(f"no outcome after {MAX_BOOTS} boots")
    if not result["bricked"]:
        result["bricked"], problems = check_device(sc, reports)
        result["problems"] += problems
    result["outcome"] = reports[-1].outcome if reports else None
    result["reason"] = reports[-1].reason if reports else ""
    result["cuts"] = dict(cutter.hits)
    return result


def run(seeds: range, base: Path, board: str = "sim") -> dict:
    totals = Counter[str]()
    cut_kinds = Counter[str]()
    examples: list[dict] = []
    started = time.perf_counter()
    for seed in seeds:
        root = base / f"seed{seed}"
        r = run_seed(seed, root, board)
        shutil.rmtree(root, ignore_errors=True)
        totals["runs"] += 1
        totals["bricked"] += r["bricked"]
        totals["inconsistent"] += bool(r["problems"]) and not r["bricked"]
        if r["outcome"]:
            totals[r["outcome"]] += 1
        if r["kind"] == "ok" and r["outcome"] != "committed":
            totals["healthy_not_committed"] += 1
        totals["boots"] += r["boots"]
        cut_kinds.update(r["cuts"])
        if (r["bricked"] or r["problems"]) and len(examples) < 5:
            examples.append(r)
    out = {k: totals[k] for k in ("runs", "bricked", "inconsistent", "committed", "rolled_back", "failed")}
    out.update(healthy_not_committed=totals["healthy_not_committed"], boots=totals["boots"],
               cuts=sum(cut_kinds.values()), cut_points=dict(sorted(cut_kinds.items())),
               elapsed_s=round(time.perf_counter() - started, 2), board=board)
    if examples:
        out["examples"] = examples
    return out


def _child(root: str, sync_every: int) -> int:
    """One boot of the device at ``root`` (for the SIGKILL test); reports go to reports.jsonl, fsync'd."""
    sc = Scenario.load(root)
    path = Path(root) / "reports.jsonl"
    reports = [UpdateReport(**json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []

    class Durable(list):
        def append(self, report: UpdateReport) -> None:
            with open(path, "a") as f:
                f.write(json.dumps(asdict(report)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            super().append(report)

    how, latent = boot_once(sc, Durable(reports), None, sync_every=sync_every)
    print(json.dumps({"boot": how, "latent": latent}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulations.powercut", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0:100", help="A:B runs seeds A..B-1 (default 0:100)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--dir", help="where devices are laid out (default: a temporary directory, on /dev/shm if there)")
    p.add_argument("--board", choices=("sim", *BOARDS), default="sim",
                   help="the boot environment: simulated (default), or real with grub-editenv / fw_setenv; "
                        "grub-emu: GRUB's boot script run by the real GRUB (Debian's grub-emu)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--sync-every", type=int, default=4 << 20, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.child, args.sync_every)
    a, _, b = args.seeds.partition(":")
    seeds = range(int(a), int(b)) if b else range(int(a), int(a) + 1)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="edgefleet-powercut-", dir=shm))
    try:
        out = run(seeds, base, args.board)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print(f"runs {out['runs']}: committed {out['committed']}, rolled back {out['rolled_back']}, "
          f"failed {out['failed']}; "
          f"bricked {out['bricked']}, inconsistent {out['inconsistent']}; {out['cuts']} power cuts "
          f"in {out['elapsed_s']} s")
    print("  cut after/at: " + ", ".join(f"{k} {v}" for k, v in out["cut_points"].items()))
    for ex in out.get("examples", []):
        print(f"  seed {ex['seed']} ({ex['kind']}): bricked={ex['bricked']} {ex['problems']}")
    if args.json:
        print(json.dumps(out))
    return 0 if out["bricked"] == 0 and out["inconsistent"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

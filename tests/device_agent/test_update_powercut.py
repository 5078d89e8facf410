"""Power cuts at any instant: the crash-point harness, an exhaustive single-cut sweep, and real SIGKILLs."""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from device_agent.update.states import State
from device_agent.update.store import RecordStore
from simulations.powercut import KINDS, Cutter, UpdateReport, boot_once, check_device, make_scenario, run
from tests.real_tools import missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fast_dir(tmp_path):
    """On tmpfs when there is one: the in-process harness fsyncs thousands of times (durability is simulated)."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="edgefleet-test-powercut-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_harness_over_100_seeds_never_bricks(fast_dir):
    out = run(range(100), fast_dir)
    assert out["runs"] == 100
    assert (out["bricked"], out["inconsistent"]) == (0, 0), out.get("examples")
    assert out["committed"] > 0 and out["rolled_back"] > 0 and out["failed"] > 0
    assert out["cuts"] > 50
    assert {k.split(":")[0] for k in out["cut_points"]} == {"record", "env", "slot-write"}


def drive(sc, cutter, max_boots=40):
    reports: list[UpdateReport] = []
    for _ in range(max_boots):
        how, latent = boot_once(sc, reports, cutter)
        assert not latent and how != "bricked"
        if how == "done":
            break
    return reports


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("point", ["record", "env"])
def test_a_cut_after_every_durable_write(fast_dir, kind, point):
    """Like Mender's 'spontaneous reboot states' table: one run per write, power cut right after it."""
    reached = set()
    for n in range(1, 40):
        sc = make_scenario(fast_dir / f"{n}", seed=n, size=32 * 1024, kind=kind)
        cutter = Cutter(random.Random(n), {point: {n}})
        reports = drive(sc, cutter)
        if not cutter.hits:
            break  # fewer than n writes of this kind in the whole update
        reached.update(cutter.hits)
        bricked, problems = check_device(sc, reports)
        assert not bricked and not problems, (n, cutter.hits, problems)
        expected = {"ok": {"committed", "rolled_back"}, "tampered": {"failed"}}.get(kind, {"rolled_back"})
        assert reports[-1].outcome in expected, (n, reports)
    assert len(reached) >= (2 if kind == "tampered" else 4), reached


def test_cuts_at_random_offsets_inside_slot_blocks(fast_dir):
    for n in range(30):
        sc = make_scenario(fast_dir / f"{n}", seed=1000 + n, size=48 * 1024, kind="ok")
        blocks = -(-sc.manifest["size"] // sc.manifest["chunk_size"])
        cutter = Cutter(random.Random(n), {"slot-write": {1 + n % blocks, 1 + (n + 1) % blocks}})
        reports = drive(sc, cutter)
        assert cutter.hits["slot-write"] >= 1
        assert check_device(sc, reports) == (False, [])
        assert reports[-1].outcome == "committed"


def test_cli_prints_the_counts_as_json_last():
    done = subprocess.run(
        [sys.executable, "-m", "simulations.powercut", "--seeds", "0:40", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["runs"] == 40 and out["bricked"] == 0 and out["inconsistent"] == 0
    assert {"committed", "rolled_back", "failed", "elapsed_s"} <= set(out)


@pytest.mark.integration
@pytest.mark.parametrize("board, seeds", [("grub", 30), ("uboot", 30), ("grub-emu", 12)])
def test_harness_on_the_real_boot_tools_never_bricks(fast_dir, board, seeds):
    """The boot environment is a real grubenv (grub-editenv) or U-Boot environment (fw_printenv/fw_setenv);
    with grub-emu the real GRUB runs the boot script at every power-on."""
    reason = {"grub": missing("grub-editenv"), "uboot": missing("fw_printenv", "fw_setenv", "mkenvimage"),
              "grub-emu": missing("grub-emu", "grub-editenv", "mke2fs", "debugfs")}[board]
    if reason:
        pytest.skip(reason)
    out = run(range(seeds), fast_dir, board)
    assert (out["runs"], out["bricked"], out["inconsistent"]) == (seeds, 0, 0), out.get("examples")
    assert out["committed"] > 0 and out["rolled_back"] > 0
    assert {"env:booting", "env:marking slot as good"} <= set(out["cut_points"]), out["cut_points"]


@pytest.mark.integration
@pytest.mark.parametrize("board", ["sim", "grub", "uboot"])
def test_sigkill_at_random_moments_then_power_on_completes(tmp_path, board):
    """A child process installs a 16 MiB image (fsync per 64 KiB) and is SIGKILLed at random moments.

    The moments are fractions of how long one uninterrupted boot takes on this
    machine (measured first on a copy), so the kills land inside the update. With
    ``board`` grub or uboot the boot environment is real (the real tools write it).
    """
    reason = {"sim": None, "grub": missing("grub-editenv"), "uboot": missing("fw_printenv", "fw_setenv")}[board]
    if reason:
        pytest.skip(reason)
    rng = random.Random(5)
    size = 16 << 20 if board == "sim" else 4 << 20  # the real tools' runs: the environment is what is new here
    mid_update: set[str] = set()
    for trial, kind in enumerate(["ok", "fail"]):

        def child_cmd(root):
            return [sys.executable, "-m", "simulations.powercut", "--child", str(root), "--sync-every", "65536"]

        make_scenario(tmp_path / f"calibrate{trial}", seed=trial, size=size, kind=kind, board=board)
        started = time.monotonic()
        subprocess.run(
            child_cmd(tmp_path / f"calibrate{trial}"), cwd=ROOT, capture_output=True, check=True, timeout=120
        )
        first_boot_s = time.monotonic() - started
        shutil.rmtree(tmp_path / f"calibrate{trial}")

        root = tmp_path / f"dev{trial}"
        sc = make_scenario(root, seed=trial, size=size, kind=kind, board=board)
        killed_in = []  # the persisted state each kill left behind
        for _ in range(6):
            child = subprocess.Popen(child_cmd(root), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                child.wait(timeout=rng.uniform(0.2, 0.9) * first_boot_s)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, 9)
                child.wait()
                record = RecordStore(root / "update.json").load()
                killed_in.append(record.state.value if record else "none")
        mid_update.update(s for s in killed_in if s not in ("none", "idle"))
        for _ in range(12):  # then power on, uninterrupted, until the update has an outcome
            done = subprocess.run(child_cmd(root), cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            boot = json.loads(done.stdout.strip().splitlines()[-1])
            assert boot["latent"] == []
            if boot["boot"] == "done":
                break
        lines = (root / "reports.jsonl").read_text().splitlines()
        reports = [UpdateReport(**json.loads(line)) for line in lines]
        assert RecordStore(root / "update.json").load().state is State.IDLE
        assert check_device(sc, reports) == (False, [])
        # GRUB gives a trial slot one boot: a kill during it ends the update rolled back, safely
        expected = {"committed", "rolled_back"} if kind == "ok" and board == "grub" else {
            "committed" if kind == "ok" else "rolled_back"}
        assert reports[-1].outcome in expected
    assert mid_update, "no SIGKILL landed inside an update"

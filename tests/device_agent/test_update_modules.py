"""Update modules beside the A/B rootfs on real files: `file` (a file or a directory replaced atomically through
a symlink, the previous kept for a roll back) and `script` (an executable speaking the module protocol), on the
same state machine, with the same reports and the same behaviour after a power cut."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from common.firmware.keys import generate_release_key, public_key_pem
from common.firmware.manifest import build_manifest, sign_manifest
from device_agent.board.modules import module_boards
from device_agent.board.profile import load_profile
from device_agent.update.store import RecordStore
from device_agent.updater import AgentUpdater

HW = "sim-board-1"
DAY = 86_400_000


def now_ms():
    return int(time.time() * 1000)


@pytest.fixture
def key(tmp_path):
    k = generate_release_key()
    (tmp_path / "release.pub").write_bytes(public_key_pem(k.public_key()))
    return k


def release(tmp_path, key, version, module, payload: bytes):
    image = tmp_path / f"{module}-{version}.bin"
    image.write_bytes(payload)
    m = build_manifest(str(image), version, [HW], security_version=1, expires_ms=now_ms() + DAY, issued_ms=now_ms(),
                       module=module)
    signed = tmp_path / f"{module}-{version}.manifest"
    signed.write_bytes(sign_manifest(m, key).to_bytes())
    return str(signed), str(image)


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def updater(tmp_path, table, reports, reboots=None):
    profile = load_profile(table)
    data = tmp_path / "agent"
    return AgentUpdater(data, "dev-1", HW, [str(tmp_path / "release.pub")], on_report=reports.append,
                        link_up=lambda: True, now_ms=now_ms, gateway_within_s=0.5,
                        on_reboot=(lambda: reboots.append(1)) if reboots is not None else (lambda: None),
                        modules=module_boards(profile, data))


def test_a_file_is_replaced_atomically_committed_and_listed_as_a_module(tmp_path, key):
    target = tmp_path / "etc" / "app.conf"
    target.parent.mkdir()
    target.write_text("factory\n")
    reports = []
    u = updater(tmp_path, {"file_target": str(target)}, reports)
    assert u.update_modules == ("rootfs-image", "swupdate", "file")
    assert u.start(*release(tmp_path, key, "1.1.0", "file", b"level = 2\n")) == "update to 1.1.0 started"
    assert [(r["outcome"], r["running_version"]) for r in reports] == [("committed", "1.1.0")]
    assert target.is_symlink() and target.read_text() == "level = 2\n"
    assert (tmp_path / "etc" / "app.conf.slots" / "slot_A.img").read_text() == "factory\n"  # the previous, kept
    assert u.running()["version"] == "1.0.0"  # the board's rootfs is untouched


def test_a_directory_bundle_failing_its_health_command_rolls_back_to_the_previous_one(tmp_path, key):
    target = tmp_path / "opt" / "app"
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "run").write_text("v1")
    check = tmp_path / "selftest.sh"
    check.write_text(f"#!/bin/sh\ngrep -q good {target}/state\n")
    table = {"file_target": str(target), "file_kind": "directory", "file_health_commands": [f"sh {check}"]}
    reports = []
    u = updater(tmp_path, table, reports)
    u.start(*release(tmp_path, key, "2.0.0", "file", tar_of({"bin/run": b"v2", "state": b"good"})))
    assert reports[-1]["outcome"] == "committed" and (target / "bin" / "run").read_text() == "v2"
    u.start(*release(tmp_path, key, "2.1.0", "file", tar_of({"bin/run": b"v3", "state": b"broken"})))
    r = reports[-1]
    assert r["outcome"] == "rolled_back" and "selftest" in r["reason"] and r["running_version"] == "2.0.0"
    assert target.is_symlink() and (target / "bin" / "run").read_text() == "v2"


MODULE = """#!/bin/sh
state="$1"; work="$2"
echo "$state $(cat "$work/version")" >> {log}
case "$state" in
  NeedsArtifactReboot) echo {reboot} ;;
  ArtifactInstall) cp "$work/payload" {installed} ;;
  ArtifactVerify) grep -q ok {installed} ;;
  ArtifactRollback) rm -f {installed} ;;
esac
"""


def script_module(tmp_path, reboot="No"):
    exe = tmp_path / "module.sh"
    exe.write_text(MODULE.format(log=tmp_path / "states.log", reboot=reboot, installed=tmp_path / "installed"))
    exe.chmod(0o755)
    return str(exe)


def states(tmp_path):
    return [line.split()[0] for line in (tmp_path / "states.log").read_text().splitlines()]


def test_a_script_module_is_driven_through_its_protocol_and_commits(tmp_path, key):
    reports = []
    u = updater(tmp_path, {"script_module": script_module(tmp_path)}, reports)
    u.start(*release(tmp_path, key, "5.0.0", "script", b"payload ok"))
    assert reports[-1]["outcome"] == "committed" and reports[-1]["running_version"] == "5.0.0"
    assert states(tmp_path) == ["Download", "ArtifactInstall", "NeedsArtifactReboot", "ArtifactVerify",
                                "ArtifactCommit"]


def test_a_script_module_failing_its_verify_is_rolled_back_by_the_script(tmp_path, key):
    reports = []
    u = updater(tmp_path, {"script_module": script_module(tmp_path)}, reports)
    u.start(*release(tmp_path, key, "5.0.0", "script", b"payload bad"))
    assert reports[-1]["outcome"] == "rolled_back" and "ArtifactVerify" in reports[-1]["reason"]
    assert states(tmp_path)[-2:] == ["ArtifactVerify", "ArtifactRollback"]
    assert not (tmp_path / "installed").exists()


def test_a_script_module_that_needs_a_reboot_runs_the_reboot_command_and_resumes_on_the_next_start(tmp_path, key):
    reports, reboots = [], []
    table = {"script_module": script_module(tmp_path, "Yes"), "reboot_command": f"touch {tmp_path / 'rebooted'}"}
    u = updater(tmp_path, table, reports, reboots)
    u.start(*release(tmp_path, key, "5.0.0", "script", b"payload ok"))
    assert reboots == [1] and (tmp_path / "rebooted").exists() and reports == []
    updater(tmp_path, table, reports, reboots).boot()  # the agent's next start
    assert reports[-1]["outcome"] == "committed" and states(tmp_path)[-1] == "ArtifactCommit"


def test_a_release_for_a_module_the_device_lacks_is_refused_before_anything_is_written(tmp_path, key):
    reports = []
    u = updater(tmp_path, {}, reports)
    result = u.start(*release(tmp_path, key, "5.0.0", "script", b"payload"))
    assert result.startswith("refused") and "update module 'script'" in result
    assert reports[-1]["outcome"] == "failed"


def test_a_power_cut_after_any_record_write_of_a_file_update_leaves_a_complete_target(tmp_path, key, monkeypatch):
    """Like the rootfs harness: the cut lands after the Nth durable record write; then the agent starts again."""

    class PowerCut(BaseException):
        pass

    save = RecordStore.save
    judged = []
    for n in range(1, 40):
        root = tmp_path / f"cut{n}"
        root.mkdir()
        (root / "release.pub").write_bytes((tmp_path / "release.pub").read_bytes())
        target = root / "app.conf"
        target.write_text("old\n")
        seen = {"saves": 0}

        def cutting(self, record, n=n, seen=seen):
            save(self, record)
            seen["saves"] += 1
            if seen["saves"] == n:
                raise PowerCut()

        monkeypatch.setattr(RecordStore, "save", cutting)
        reports: list = []
        try:
            updater(root, {"file_target": str(target)}, reports).start(
                *release(root, key, "1.1.0", "file", b"new\n"))
        except PowerCut:
            pass
        monkeypatch.setattr(RecordStore, "save", save)
        if seen["saves"] < n:
            break  # the update needs fewer writes than n
        for _ in range(3):
            updater(root, {"file_target": str(target)}, reports).boot()
        assert target.read_text() in ("old\n", "new\n")
        outcomes = {r["outcome"] for r in reports}
        record = json.loads((root / "agent" / "modules" / "file.json").read_text())
        if not outcomes and record["state"] == "idle":  # cut before the update began: nothing changed
            assert target.read_text() == "old\n"
            continue
        assert record["state"] == "idle" and len(outcomes) == 1, (n, reports, record)
        assert target.read_text() == ("new\n" if outcomes == {"committed"} else "old\n"), (n, outcomes)
        judged.append(outcomes.pop())
    assert n > 8 and len(judged) >= 6 and "committed" in judged, judged

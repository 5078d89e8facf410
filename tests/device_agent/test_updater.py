"""The agent's update flow on its simulated board, end to end on real files: signed manifests, full images,
deltas, downgrade allowances, a failing self-test."""

import time

import pytest

from common.delta import make_delta
from common.firmware.keys import generate_release_key, public_key_pem
from common.firmware.manifest import Allowance, build_manifest, sign_allowance, sign_manifest
from device_agent import simimage
from device_agent.updater import FACTORY_VERSION, AgentUpdater

HW = "sim-board-1"
DAY = 86_400_000


def now_ms():
    return int(time.time() * 1000)


@pytest.fixture
def key(tmp_path):
    k = generate_release_key()
    (tmp_path / "release.pub").write_bytes(public_key_pem(k.public_key()))
    return k


def release(tmp_path, key, version, health="ok", *, security=1, size=128 * 1024, name=None):
    name = name or f"{version}-{health}"
    image = tmp_path / f"{name}.img"
    image.write_bytes(simimage.make(version, health, size))
    m = build_manifest(str(image), version, [HW], security_version=security, expires_ms=now_ms() + DAY, issued_ms=now_ms())
    signed = tmp_path / f"{name}.manifest"
    signed.write_bytes(sign_manifest(m, key).to_bytes())
    return str(signed), str(image)


def updater(tmp_path, reports, *, link=True):
    return AgentUpdater(tmp_path / "dev", "dev-1", HW, [str(tmp_path / "release.pub")],
                        on_report=reports.append, link_up=lambda: link, now_ms=now_ms, gateway_within_s=0.5)


def test_good_release_commits_and_is_reported(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    assert u.running()["version"] == FACTORY_VERSION
    assert u.start(*release(tmp_path, key, "2.0.0")) == "update to 2.0.0 started"
    assert u.running()["version"] == "2.0.0"
    assert [(r["outcome"], r["running_version"]) for r in reports] == [("committed", "2.0.0")]


def test_image_failing_its_self_test_rolls_back_and_says_why(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    u.start(*release(tmp_path, key, "2.0.0", "fail"))
    assert u.running()["version"] == FACTORY_VERSION
    (r,) = reports
    assert r["outcome"] == "rolled_back" and "self-test" in r["reason"] and r["running_version"] == FACTORY_VERSION


def test_no_gateway_on_the_trial_boot_rolls_back(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports, link=False)
    u.start(*release(tmp_path, key, "2.0.0"))
    assert reports[-1]["outcome"] == "rolled_back" and "gateway" in reports[-1]["reason"]


def delta_release(tmp_path, key, u, version):
    """A release that changes a few bytes of the running image, and the delta to it from the running slot."""
    assert u.running()["version"] == FACTORY_VERSION  # lays the board out
    old = tmp_path / "dev" / "board" / "slot_A.img"
    new = bytearray(old.read_bytes())
    header = simimage.make(version, "ok", 64)
    new[: len(header)] = header
    image = tmp_path / f"{version}.img"
    image.write_bytes(bytes(new))
    m = build_manifest(str(image), version, [HW], security_version=1, expires_ms=now_ms() + DAY, issued_ms=now_ms())
    manifest = tmp_path / f"{version}.manifest"
    manifest.write_bytes(sign_manifest(m, key).to_bytes())
    patch = tmp_path / f"{version}.delta"
    make_delta(str(old), str(image), str(patch), isolate=False)
    assert patch.stat().st_size < len(new) / 4
    return str(manifest), patch


def test_delta_rebuilds_the_image_from_the_running_slot(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    manifest, patch = delta_release(tmp_path, key, u, "2.1.0")
    assert u.start(manifest, "", delta_path=str(patch)) == "update to 2.1.0 started"
    assert u.running()["version"] == "2.1.0" and reports[-1]["outcome"] == "committed"


def test_tampered_delta_is_refused_and_nothing_is_installed(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    manifest, patch = delta_release(tmp_path, key, u, "2.1.0")
    data = bytearray(patch.read_bytes())
    data[-10] ^= 0xFF
    patch.write_bytes(bytes(data))
    assert u.start(manifest, "", delta_path=str(patch)).startswith("refused")
    assert u.running()["version"] == FACTORY_VERSION and reports[-1]["outcome"] == "failed"


def test_manifest_signed_by_an_unknown_key_is_refused(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    stranger = generate_release_key()
    assert u.start(*release(tmp_path, stranger, "2.0.0")).startswith("refused")
    assert u.running()["version"] == FACTORY_VERSION and reports[-1]["outcome"] == "failed"


def test_downgrade_needs_a_signed_allowance(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    u.start(*release(tmp_path, key, "3.0.0"))
    older = release(tmp_path, key, "2.5.0")
    assert u.start(*older).startswith("refused")
    assert u.running()["version"] == "3.0.0"
    allowance = tmp_path / "allow.sig"
    allowance.write_bytes(sign_allowance(Allowance("dev-1", "2.5.0", now_ms() + DAY), key).to_bytes())
    assert u.start(*older, allowance_path=str(allowance)) == "update to 2.5.0 started"
    assert u.running()["version"] == "2.5.0" and reports[-1]["outcome"] == "committed"


def test_below_the_security_floor_is_refused_even_with_a_newer_version(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    u.start(*release(tmp_path, key, "2.0.0", security=5))
    assert u.start(*release(tmp_path, key, "2.1.0", security=4)).startswith("refused")
    assert u.running()["version"] == "2.0.0"


def test_return_to_the_previous_release_reinstalls_it_from_the_other_slot_with_its_kept_manifest(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    assert u.revert().startswith("refused")  # nothing but the factory image: no release to return to
    u.start(*release(tmp_path, key, "2.0.0"))
    assert "factory image" in u.revert()  # the other slot holds the factory image: no signed manifest kept
    u.start(*release(tmp_path, key, "3.0.0"))
    assert u.running()["version"] == "3.0.0"
    assert u.revert() == "return to 2.0.0 started"
    assert u.running()["version"] == "2.0.0"
    assert [(r["outcome"], r["running_version"]) for r in reports][-1] == ("committed", "2.0.0")


def test_return_to_a_release_below_the_security_floor_is_refused(tmp_path, key):
    reports = []
    u = updater(tmp_path, reports)
    u.start(*release(tmp_path, key, "2.0.0", security=1))
    u.start(*release(tmp_path, key, "3.0.0", security=2))  # raises the floor to 2
    before = len(reports)
    answer = u.revert()
    assert answer.startswith("refused: cannot return to 2.0.0") and "floor" in answer, answer
    assert u.running()["version"] == "3.0.0" and len(reports) == before  # nothing was installed

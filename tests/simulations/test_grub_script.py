"""GRUB's boot script (simulations.grub_script.GRUB_CFG) run by the real GRUB (Debian's grub-emu) agrees with
its Python emulation on every environment: the slot booted and the environment saved."""

import random

import pytest

from device_agent.update.grub import GrubBootloader
from simulations.grub_script import grub_emu_boot, grub_script_boot
from tests.real_tools import requires

pytestmark = [pytest.mark.integration, requires("grub-emu", "grub-editenv", "mke2fs", "debugfs")]


def test_the_real_grub_and_the_emulation_pick_the_same_slot_and_save_the_same_environment(tmp_path):
    rng = random.Random(16)
    seen = set()
    for i in range(20):
        values = {"ORDER": rng.choice(["A B", "B A"]),
                  **{f"{s}_{k}": rng.choice("01") for s in "AB" for k in ("OK", "TRY")}}
        real = GrubBootloader.create(tmp_path / f"real{i}", booted="A")
        emulated = GrubBootloader.create(tmp_path / f"emulated{i}", booted="A")
        for bl in (real, emulated):
            bl._set("setting up", **values)
        booted = grub_emu_boot(real.path, tmp_path / f"work{i}")
        assert booted == grub_script_boot(emulated), values
        saved = real.env()
        assert saved.pop("BOOTED") == (booted or "none")
        assert saved == emulated.env(), values
        seen.add(booted)
    assert seen == {"A", "B", None}  # every outcome, a brick included, was exercised

"""The board profile: the [board] table and flags, checked; probes of the running system."""

import pytest

from common.errors import BootloaderError, ConfigError, UpdateError
from device_agent.board.probes import booted_slot, run_reboot, running_version
from device_agent.board.profile import BoardProfile, load_profile

GRUB = {"bootloader": "grub", "grubenv": "/boot/efi/EFI/BOOT/grubenv", "slot_a": "/dev/sda2", "slot_b": "/dev/sda3",
        "health_commands": ["systemctl is-system-running --wait", ["/usr/libexec/selftest", "--quick"]],
        "reboot_command": "systemctl reboot", "gateway_within_s": 120}


def test_no_table_is_the_simulated_board():
    assert load_profile({}) == BoardProfile() and not BoardProfile().real


def test_a_grub_table_is_read_and_commands_are_split_into_words():
    p = load_profile(GRUB)
    assert p.real and p.slot_devices == {"A": "/dev/sda2", "B": "/dev/sda3"}
    assert p.health_commands == (("systemctl", "is-system-running", "--wait"), ("/usr/libexec/selftest", "--quick"))
    assert p.reboot_command == ("systemctl", "reboot") and p.gateway_within_s == 120.0


def test_flags_override_the_file():
    p = load_profile(GRUB, "config file 'a.toml'", {"slot_b": "/dev/sdb3", "health_commands": ("true",),
                                                     "grubenv": None})
    assert p.slot_b == "/dev/sdb3" and p.health_commands == (("true",),) and p.grubenv == GRUB["grubenv"]


@pytest.mark.parametrize("table, words", [
    ({"bootlaoder": "grub"}, "unknown board key 'bootlaoder'"),
    ({"bootloader": "lilo"}, "one of sim, grub, uboot"),
    ({"bootloader": "grub"}, "needs slot_a and slot_b"),
    ({"booted_slot": "/proc/cmdline"}, "expected cmdline:... or command:..."),
    ({"version_from": "env:VERSION"}, "os-release:... or file:... or command:..."),
    ({"health_timeout_s": -1}, "expects a positive number"),
    ({"health_commands": "selftest"}, "must be a list of commands"),
    ({"reboot_command": ""}, "must be a command"),
])
def test_a_wrong_table_names_the_source_and_the_key(table, words):
    with pytest.raises(ConfigError, match="config file 'x.toml'|command line") as exc:
        load_profile(table, "config file 'x.toml'")
    assert words in str(exc.value)


def test_the_booted_slot_from_the_kernel_command_line(tmp_path):
    cmdline = tmp_path / "cmdline"
    devices = {"A": "/dev/sda2", "B": "/dev/sda3"}
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda3 rauc.slot=A ro quiet\n")
    assert booted_slot(f"cmdline:{cmdline}", devices) == "A"  # the bootloader's word first
    cmdline.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda3 ro quiet\n")
    assert booted_slot(f"cmdline:{cmdline}", devices) == "B"
    cmdline.write_text("root=/dev/nvme0n1p2\n")
    with pytest.raises(BootloaderError, match="neither slot device"):
        booted_slot(f"cmdline:{cmdline}", devices)
    assert booted_slot("command:echo B", devices) == "B"
    with pytest.raises(BootloaderError, match="printed 'C'"):
        booted_slot("command:echo C", devices)


def test_the_running_version_from_os_release_a_file_or_a_command(tmp_path):
    (tmp_path / "os-release").write_text('NAME="Debian"\nVERSION_ID="12.4"\n')
    (tmp_path / "sw-version").write_text("2.1.0\nbuilt by ci\n")
    assert running_version(f"os-release:{tmp_path / 'os-release'}") == "12.4"
    assert running_version(f"file:{tmp_path / 'sw-version'}") == "2.1.0"
    assert running_version("command:echo 3.0.0") == "3.0.0"
    (tmp_path / "os-release").write_text('NAME="Debian"\n')
    with pytest.raises(UpdateError, match="no VERSION_ID"):
        running_version(f"os-release:{tmp_path / 'os-release'}")


def test_a_failing_reboot_command_is_an_error_naming_it():
    run_reboot(["true"])
    with pytest.raises(UpdateError, match="'false' exited with 1"):
        run_reboot(["false"])


def test_a_board_table_in_the_agents_toml_is_read_and_a_wrong_one_stops_the_agent_naming_the_key(tmp_path):
    from click.testing import CliRunner

    from common.config import load_config
    from device_agent.cli import DEFAULTS, agent

    good = tmp_path / "agent.toml"
    good.write_text('gateway_key = "k"\n[board]\nbootloader = "uboot"\nslot_a = "/dev/mmcblk0p2"\n'
                    'slot_b = "/dev/mmcblk0p3"\nversion_from = "file:/etc/sw-version"\n'
                    'health_commands = ["/usr/libexec/app-selftest --quick"]\n')
    profile = load_profile(load_config(str(good), DEFAULTS, {})["board"])
    assert profile.bootloader == "uboot" and profile.health_commands == (("/usr/libexec/app-selftest", "--quick"),)
    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_key = "k"\n[board]\nbootloader = "grub"\nslot_a = "/dev/sda2"\n')
    done = CliRunner().invoke(agent, ["--config", str(bad), "--data-dir", str(tmp_path / "data")])
    assert done.exit_code == 2 and "needs slot_a and slot_b" in done.output
    done = CliRunner().invoke(agent, ["--config", str(good), "--booted-slot-from", "/proc/cmdline"])
    assert done.exit_code == 2 and "command line: board key 'booted_slot'" in done.output
    assert not (tmp_path / "data").exists()  # nothing started

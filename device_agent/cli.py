"""``edgefleet agent``: run a device agent from a TOML config file and flags."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from common.errors import ConfigError
from common.keys import resolve_public_key
from common.nodecli import node_config, node_options, run_node
from common.streams import DEVICE_POLICIES, quota_defaults, with_quotas_mb
from device_agent.board.profile import BOARD_FLAGS, BOOTLOADERS, load_profile

__all__ = ["REBOOT_EXIT", "agent"]

REBOOT_EXIT = 75  # EX_TEMPFAIL: stopped on purpose, start me again

DEFAULTS = {
    "device_id": socket.gethostname(),
    "site": "default",
    "data_dir": "./var/agent",
    "gateway": "tcp://127.0.0.1:7701",
    "gateway_key": "",
    "sample_interval": 1.0,
    "heartbeat": 1.0,
    **quota_defaults(DEVICE_POLICIES),
    "drain": 10.0,
    "allow_simulation": False,
    "hw": "sim-board-1",
    "release_key": [],
    "download_rate": 0,
    "enroll_endpoint": "",  # the gateway's enrollment socket: enroll on first boot (no DATA_DIR/cert.pem yet)
    "claim_token": "",  # a site claim token; empty: claim by serial
    "serial": "",  # factory serial (default: the device id)
    "cloud_sign_key": [],  # the cloud's signing.pub: only commands it signed are run
    "log_level": "info",
    "log_format": "json",
    "board": {},  # the [board] table: the board profile (device_agent/board/profile.py, docs/UPDATES.md)
}

EPILOG = """\b
Board profile: a [board] table in the config (flags override it); without
one the agent updates its simulated board (the demo's). docs/UPDATES.md
explains each key.

\b
A GRUB x86 box (RAUC's GRUB scheme, grub.cfg picks the slot):
  [board]
  bootloader = "grub"
  grubenv = "/boot/efi/EFI/BOOT/grubenv"
  slot_a = "/dev/sda2"
  slot_b = "/dev/sda3"
  booted_slot = "cmdline:/proc/cmdline"      # rauc.slot=A, or root=/dev/sda2
  version_from = "os-release:/etc/os-release"
  reboot_command = "systemctl reboot"
  health_commands = ["systemctl is-system-running --wait"]
  health_command_timeout_s = 120
  gateway_within_s = 120

\b
A U-Boot ARM board (RAUC's U-Boot scheme, BOOT_ORDER and BOOT_x_LEFT):
  [board]
  bootloader = "uboot"
  fw_env_config = "/etc/fw_env.config"
  uboot_attempts = 3
  slot_a = "/dev/mmcblk0p2"
  slot_b = "/dev/mmcblk0p3"
  booted_slot = "cmdline:/proc/cmdline"
  version_from = "file:/etc/sw-version"
  reboot_command = "systemctl reboot"
  health_commands = ["/usr/libexec/app-selftest --quick"]
"""


@click.command(epilog=EPILOG)
@node_options("Where keys, the telemetry buffer and stats live.")
@click.option("--device-id", help="This device's id (default: the host name).")
@click.option("--site", help="The site this device belongs to.")
@click.option("--gateway", help="The gateway's device endpoint, e.g. tcp://10.0.0.2:7701.")
@click.option("--gateway-key", help="The gateway's CURVE public key: 40 Z85 characters or a file holding them.")
@click.option("--sample-interval", type=float, help="Seconds between telemetry samples.")
@click.option("--heartbeat", type=float, help="Heartbeat interval in seconds; a gateway silent for 3 is dead.")
@click.option("--critical-quota-mb", type=float, help="Buffer quota of the critical stream (never evicted).")
@click.option("--state-quota-mb", type=float, help="Buffer quota of the state stream (oldest evicted when full).")
@click.option("--bulk-quota-mb", type=float, help="Buffer quota of the bulk stream (oldest evicted when full).")
@click.option("--drain", type=float, help="Seconds to keep sending the buffer after SIGTERM.")
@click.option("--hw", help="This device's hardware model: firmware manifests must name it.")
@click.option("--release-key", multiple=True, help="A release public key (PEM file) trusted to sign firmware (repeatable).")
@click.option("--download-rate", type=int, help="Bytes per second a firmware download may use (0: no limit).")
@click.option("--allow-simulation", is_flag=True, default=None, help="Let the simulate command override metrics (drills).")
@click.option("--enroll-endpoint", help="The gateway's enrollment endpoint: enroll on first boot (zero-touch).")
@click.option("--claim-token", envvar="EDGEFLEET_CLAIM_TOKEN", help="Site claim token [env EDGEFLEET_CLAIM_TOKEN]; none: claim by serial.")
@click.option("--serial", help="Factory serial number (default: the device id).")
@click.option("--cloud-sign-key", multiple=True, help="The cloud's signing.pub: run only commands it signed (repeatable).")
@click.option("--bootloader", type=click.Choice(BOOTLOADERS), help="Board: grub, uboot or sim (the simulated board).")
@click.option("--grubenv", help="Board (grub): the GRUB environment file grub-editenv edits.")
@click.option("--fw-env-config", help="Board (uboot): fw_env.config naming the U-Boot environment.")
@click.option("--slot-a", help="Board: slot A's block device (or file).")
@click.option("--slot-b", help="Board: slot B's block device (or file).")
@click.option("--booted-slot-from", help="Board: cmdline:PATH (rauc.slot= or root=) or command:CMD printing A or B.")
@click.option("--version-from", help="Board: os-release:PATH (VERSION_ID), file:PATH or command:CMD.")
@click.option("--reboot-command", help="Board: the command that reboots the device (default: systemctl reboot).")
@click.option("--health-command", multiple=True, help="Board: a trial boot's health check command (repeatable).")
@click.option("--health-timeout", type=float, help="Board: seconds all health checks of a trial boot may take.")
def agent(config_path: str | None, **flags: object) -> None:
    """Run a device agent: sample metrics, buffer them durably, stream them to the gateway.

    Keys are made on first start in the data directory (curve.key is the public
    half to give the gateway). SIGTERM stops sampling, drains the buffer for up
    to --drain seconds and writes stats.json.
    """
    board_flags = {BOARD_FLAGS[k]: flags.pop(k) for k in list(flags) if k in BOARD_FLAGS}
    cfg = node_config(config_path, DEFAULTS, flags, repeatable=("release_key", "cloud_sign_key"), node_key="device_id")
    try:
        board = load_profile(cfg["board"], f"config file {config_path!r}", board_flags)
    except ConfigError as exc:  # the board profile is checked before anything starts, and named
        raise click.UsageError(str(exc)) from exc
    if not cfg["gateway_key"]:
        raise click.UsageError("the gateway's public key is needed: pass --gateway-key KEY|FILE or set gateway_key in the config")
    from device_agent.driver import AgentConfig, run_agent

    stats = run_node(
        "agent",
        run_agent(
            AgentConfig(
                device_id=cfg["device_id"],
                site=cfg["site"],
                data_dir=Path(cfg["data_dir"]),
                gateway=cfg["gateway"],
                gateway_key=resolve_public_key(cfg["gateway_key"]),
                sample_interval_s=cfg["sample_interval"],
                heartbeat_s=cfg["heartbeat"],
                policies=with_quotas_mb(DEVICE_POLICIES, cfg),
                drain_s=cfg["drain"],
                allow_simulation=cfg["allow_simulation"],
                hw=cfg["hw"],
                release_keys=tuple(cfg["release_key"]),
                download_rate=float(cfg["download_rate"]),
                enroll_endpoint=cfg["enroll_endpoint"],
                claim_token=cfg["claim_token"],
                serial=cfg["serial"],
                cloud_sign_keys=tuple(cfg["cloud_sign_key"]),
                board=board,
            )
        )
    )
    if "produced" not in stats:
        click.echo(f"agent {stats['device_id']}: stopped before it was enrolled", err=True)
        return
    click.echo(f"agent {stats['device_id']}: produced {stats['produced']}, still buffered {stats['buffered']}", err=True)
    if stats.get("reboot_requested"):
        # `edgefleet devices reboot`, or an update's reboot: the service manager (systemd Restart=on-failure)
        # starts it again, or the board's reboot command reboots the device under it
        click.echo(f"agent {stats['device_id']}: reboot requested (by the cloud or an update); exiting with "
                   f"{REBOOT_EXIT}", err=True)
        raise SystemExit(REBOOT_EXIT)

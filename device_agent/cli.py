"""``edgefleet agent``: run a device agent from a TOML config file and flags."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from common.keys import resolve_public_key
from common.nodecli import node_config, node_options, run_node
from common.streams import DEVICE_POLICIES, quota_defaults, with_quotas_mb

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
}


@click.command()
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
def agent(config_path: str | None, **flags: object) -> None:
    """Run a device agent: sample metrics, buffer them durably, stream them to the gateway.

    Keys are made on first start in the data directory (curve.key is the public
    half to give the gateway). SIGTERM stops sampling, drains the buffer for up
    to --drain seconds and writes stats.json.
    """
    cfg = node_config(config_path, DEFAULTS, flags, repeatable=("release_key", "cloud_sign_key"), node_key="device_id")
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
            )
        )
    )
    if "produced" not in stats:
        click.echo(f"agent {stats['device_id']}: stopped before it was enrolled", err=True)
        return
    click.echo(f"agent {stats['device_id']}: produced {stats['produced']}, still buffered {stats['buffered']}", err=True)
    if stats.get("reboot_requested"):
        # `edgefleet devices reboot`: the service manager (e.g. systemd Restart=on-failure) starts it again
        click.echo(f"agent {stats['device_id']}: reboot requested by the cloud; exiting with {REBOOT_EXIT}", err=True)
        raise SystemExit(REBOOT_EXIT)

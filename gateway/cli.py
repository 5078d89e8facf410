"""``edgefleet gateway``: run a site gateway from a TOML config file and flags."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import click

from common.config import load_config
from common.keys import resolve_public_key
from common.logs import setup_logging

__all__ = ["gateway"]

DEFAULTS = {
    "gateway_id": socket.gethostname(),
    "site": "default",
    "data_dir": "./var/gateway",
    "bind": "tcp://127.0.0.1:7701",
    "cloud": "tcp://127.0.0.1:7700",
    "cloud_key": "",
    "heartbeat": 1.0,
    "outbox_max_mb": 1024,
    "durable": True,
    "log_level": "info",
    "log_format": "json",
}


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), help="TOML file; flags override it.")
@click.option("--gateway-id", help="This gateway's id (default: the host name).")
@click.option("--site", help="The site this gateway serves.")
@click.option("--data-dir", help="Where keys, the outbox, allowed_devices and stats live.")
@click.option("--bind", help="Device-facing endpoint to bind, e.g. tcp://0.0.0.0:7701 (port * for any).")
@click.option("--cloud", help="The cloud's gateway endpoint, e.g. tcp://cloud.example:7700.")
@click.option("--cloud-key", help="The cloud's CURVE public key: 40 Z85 characters or a file holding them.")
@click.option("--heartbeat", type=float, help="Heartbeat interval in seconds; a peer silent for 3 is dead.")
@click.option("--outbox-max-mb", type=int, help="Byte bound of the outbox, in MiB.")
@click.option("--durable/--fast", default=None, help="fsync every commit (default) or the fast mode (see docs).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["json", "text"]))
def gateway(config_path: str | None, **flags: object) -> None:
    """Run a site gateway: accept device telemetry durably, forward it to the cloud.

    Devices are admitted by CURVE public key, one per line in
    DATA_DIR/allowed_devices (re-read when it changes). After binding, the
    gateway writes DATA_DIR/endpoints.json with its endpoint and public key.
    """
    cfg = load_config(config_path, DEFAULTS, flags)
    setup_logging(cfg["log_level"], cfg["log_format"], node=cfg["gateway_id"])
    if not cfg["cloud_key"]:
        raise click.UsageError("the cloud's public key is needed: pass --cloud-key KEY|FILE or set cloud_key in the config")
    from gateway.driver import GatewayConfig, run_gateway

    stats = asyncio.run(
        run_gateway(
            GatewayConfig(
                gateway_id=cfg["gateway_id"],
                site=cfg["site"],
                data_dir=Path(cfg["data_dir"]),
                cloud=cfg["cloud"],
                cloud_key=resolve_public_key(cfg["cloud_key"]),
                bind=cfg["bind"],
                heartbeat_s=cfg["heartbeat"],
                outbox_max_bytes=cfg["outbox_max_mb"] * 1024 * 1024,
                durable=cfg["durable"],
            )
        )
    )
    click.echo(f"gateway {cfg['gateway_id']}: {stats['records_in']} records accepted, {stats['backlog']} in the outbox", err=True)

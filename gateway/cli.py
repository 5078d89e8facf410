"""``edgefleet gateway``: run a site gateway from a TOML config file and flags."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from common.keys import resolve_public_key
from common.nodecli import node_config, node_options, run_node
from common.streams import GATEWAY_POLICIES, quota_defaults, with_quotas_mb

__all__ = ["gateway"]

DEFAULTS = {
    "gateway_id": socket.gethostname(),
    "site": "default",
    "data_dir": "./var/gateway",
    "bind": "tcp://127.0.0.1:7701",
    "cloud": "tcp://127.0.0.1:7700",
    "cloud_key": "",
    "heartbeat": 1.0,
    **quota_defaults(GATEWAY_POLICIES),
    "uplink_rate": 0,
    "uplink_burst": 0,
    "link_windows": [],
    "timezone": "UTC",
    "status_interval": 5.0,
    "rollout_key": "",
    "site_alert_rules": None,  # rule tables evaluated while the uplink is down (gateway.site_alerts.SITE_RULES)
    "durable": True,
    "cache_mb": 1024,
    "metrics_bind": "",  # HOST:PORT: serve Prometheus metrics (opt-in)
    "firmware_window": 1,
    "release_key": [],
    "enroll_bind": "",  # enrollment socket for devices without a certificate; empty: none
    "ca_chain": "",  # fleet CA bundle (the cloud's CA dir/chain.pem)
    "cloud_sign_key": [],  # the cloud's signing.pub (repeat while replacing it): revocation lists must verify
    "uplink_source": "",  # local address (interface) the uplink leaves from
    "cert": "",  # this gateway's certificate (edgefleet ca issue --role gateway)
    "cert_check": 6 * 3600.0,  # seconds between showings of the certificate (the cloud renews it at 2/3 of its life)
    "ddi_bind": "",  # hawkBit DDI for SWUpdate devices (docs/DDI.md): HOST:PORT; empty: not served
    "ddi_tenant": "default",
    "ddi_poll": 60.0,
    "ddi_tls_cert": "",
    "ddi_tls_key": "",
    "ddi_gateway_token_file": "",
    "log_level": "info",
    "log_format": "json",
}


@click.command()
@node_options("Where keys, the outbox, allowed_devices and stats live.")
@click.option("--gateway-id", help="This gateway's id (default: the host name).")
@click.option("--site", help="The site this gateway serves.")
@click.option("--bind", help="Device-facing endpoint to bind, e.g. tcp://0.0.0.0:7701 (port * for any).")
@click.option("--cloud", help="The cloud's gateway endpoint, e.g. tcp://cloud.example:7700; N coordinators: "
              "their endpoints comma-separated (one is used, the next on failover).")
@click.option("--cloud-key", help="The cloud's CURVE public key: 40 Z85 characters or a file holding them.")
@click.option("--heartbeat", type=float, help="Heartbeat interval in seconds; a peer silent for 3 is dead.")
@click.option("--critical-quota-mb", type=float, help="Outbox quota of the critical stream (never evicted; full = backpressure).")
@click.option("--state-quota-mb", type=float, help="Outbox quota of the state stream (oldest evicted when full).")
@click.option("--bulk-quota-mb", type=float, help="Outbox quota of the bulk stream (oldest evicted when full).")
@click.option("--uplink-rate", type=int, help="Cap on uplink bytes per second (0: none), e.g. 20000 for a satellite link.")
@click.option("--uplink-burst", type=int, help="Bytes the uplink may send at once above the rate (default: 1.5% of a second's, at least 2 KiB).")
@click.option("--link-window", "link_windows", multiple=True, help="'CRON|SECONDS': when state and bulk may use a metered uplink (repeatable).")
@click.option("--timezone", help="IANA timezone of the link windows, e.g. Europe/Berlin.")
@click.option("--status-interval", type=float, help="Seconds between health reports to the cloud.")
@click.option("--cache-mb", type=int, help="Byte budget of the site's firmware cache, in MiB (least recently used evicted, pinned kept).")
@click.option("--firmware-window", type=int, help="Chunk requests in flight to the cloud [1]: more for long fat links; a cut resends up to this many.")
@click.option("--release-key", multiple=True, help="A release public key (PEM): manifests are checked here before fetching (repeatable).")
@click.option("--rollout-key", help="The cloud's rollout-plan public key (PEM, DATA_DIR/rollout_signing.pub of the "
              "cloud): run the site's part of rollouts from plans it signed, also while the uplink is down.")
@click.option("--durable/--fast", default=None, help="fsync every commit (default) or the fast mode (see docs).")
@click.option("--enroll-bind", help="Enrollment endpoint for new devices (any key; enrollment only), e.g. tcp://10.1.0.1:7702.")
@click.option("--ca-chain", help="The fleet CA bundle (chain.pem) certificates of enrolled devices must verify against.")
@click.option("--cloud-sign-key", multiple=True, help="The cloud's signing.pub: revocation lists must be signed by it (repeatable).")
@click.option("--cert", help="This gateway's certificate (edgefleet ca issue --role gateway), shown to the cloud.")
@click.option("--cert-check", type=float, help="Seconds between showings of the certificate to the cloud, which renews it at 2/3 of its life [21600].")
@click.option("--uplink-source", help="Local address the uplink leaves from (the site's WAN interface), apart from --bind.")
@click.option("--ddi-bind", help="Serve hawkBit's DDI API here (HOST:PORT) for devices running SWUpdate's suricatta "
                                 "(docs/DDI.md); off unless given.")
@click.option("--ddi-tenant", help="The DDI tenant devices name in their URL [default].")
@click.option("--ddi-poll", type=float, help="Seconds between polls DDI devices are told [60].")
@click.option("--ddi-tls-cert", help="The site's TLS certificate chain (PEM) for DDI over HTTPS (with --ddi-tls-key).")
@click.option("--ddi-tls-key", help="The key of --ddi-tls-cert (PEM).")
@click.option("--ddi-gateway-token-file", help="A file holding the site's DDI GatewayToken (optional; TargetTokens "
                                               "are issued per device: edgefleet devices ddi-token).")
@click.option("--metrics-bind", metavar="HOST:PORT", help="Serve Prometheus metrics (GET /metrics) on this address; off unless given.")
def gateway(config_path: str | None, **flags: object) -> None:
    """Run a site gateway: accept device telemetry durably, forward it to the cloud.

    Devices are admitted by CURVE public key, one per line in
    DATA_DIR/allowed_devices (re-read when it changes). After binding, the
    gateway writes DATA_DIR/endpoints.json with its endpoint and public key.
    """
    cfg = node_config(config_path, DEFAULTS, flags, repeatable=("link_windows", "release_key", "cloud_sign_key"),
                      node_key="gateway_id")
    if not cfg["cloud_key"]:
        raise click.UsageError("the cloud's public key is needed: pass --cloud-key KEY|FILE or set cloud_key in the config")
    from gateway.driver import GatewayConfig, run_gateway

    stats = run_node(
        "gateway",
        run_gateway(
            GatewayConfig(
                gateway_id=cfg["gateway_id"],
                site=cfg["site"],
                data_dir=Path(cfg["data_dir"]),
                cloud=",".join(cfg["cloud"]) if isinstance(cfg["cloud"], list) else cfg["cloud"],
                cloud_key=resolve_public_key(cfg["cloud_key"]),
                bind=cfg["bind"],
                heartbeat_s=cfg["heartbeat"],
                policies=with_quotas_mb(GATEWAY_POLICIES, cfg),
                durable=cfg["durable"],
                uplink_bytes_per_s=cfg["uplink_rate"],
                uplink_burst_bytes=cfg["uplink_burst"] or max(2048, cfg["uplink_rate"] * 0.015),
                link_windows=tuple(_window(w) for w in cfg["link_windows"]),
                timezone=cfg["timezone"],
                status_interval_s=cfg["status_interval"],
                cache_mb=cfg["cache_mb"],
                metrics_bind=str(cfg["metrics_bind"] or ""),
                firmware_window=cfg["firmware_window"],
                release_keys=tuple(cfg["release_key"]),
                enroll_bind=cfg["enroll_bind"],
                ca_chain=cfg["ca_chain"],
                cloud_sign_keys=tuple(cfg["cloud_sign_key"]),
                uplink_source=cfg["uplink_source"],
                cert=cfg["cert"],
                cert_check_s=float(cfg["cert_check"]),
                rollout_key=cfg["rollout_key"],
                site_alert_rules=None if cfg["site_alert_rules"] is None else tuple(cfg["site_alert_rules"]),
                ddi_bind=cfg["ddi_bind"],
                ddi_tenant=cfg["ddi_tenant"],
                ddi_poll_s=float(cfg["ddi_poll"]),
                ddi_tls_cert=cfg["ddi_tls_cert"],
                ddi_tls_key=cfg["ddi_tls_key"],
                ddi_gateway_token_file=cfg["ddi_gateway_token_file"],
            )
        )
    )
    backlog = sum(stats[f"backlog.{s}.records"] for s in ("critical", "state", "bulk"))
    click.echo(f"gateway {cfg['gateway_id']}: {stats['records_in']} records accepted, {backlog} in the outbox", err=True)


def _window(text: str) -> tuple[str, float]:
    cron, sep, seconds = text.rpartition("|")
    try:
        if not sep:
            raise ValueError("no '|'")
        return cron.strip(), float(seconds)
    except ValueError as exc:
        raise click.BadParameter(f"link window {text!r} must be 'CRON|SECONDS', e.g. '0 2 * * *|3600' ({exc})") from None

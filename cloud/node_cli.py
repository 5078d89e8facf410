"""``edgefleet cloud``: run the cloud coordinator from a TOML config file and flags.

The flags every node shares, the config file and logging are ``common.nodecli``'s.
"""

from __future__ import annotations

from pathlib import Path

import click

from common.nodecli import node_config, node_options, run_node

__all__ = ["cloud"]

DEFAULTS = {
    "data_dir": "./var/cloud",
    "bind": "tcp://127.0.0.1:7700",
    "api_host": "127.0.0.1",
    "api_port": 8700,
    "database": "",
    "heartbeat": 1.0,
    "webhooks": [],  # URLs every alert event is POSTed to
    "alert_rules": None,  # a list of rule tables (common.alerting.parse_rules); None: cloud.alerts.DEFAULT_RULES
    "firmware_releases": [],  # release versions, for firmware rules
    "release_keys": [],  # PEM public key files trusted to sign firmware manifests
    "release_delta_bases": 3,  # a new release gets deltas from this many older ones (K)
    "release_chunk_kb": 1024,  # chunk size of new releases' images (the unit of resume and of hash checks)
    "ca_dir": "",  # the fleet CA directory (edgefleet ca init); empty: no enrollment
    "cert_days": 90.0,  # lifetime of issued device certificates
    "enroll_rules": [],  # [{hw_prefix, serial_prefix, site, groups, config}]: groups and config for new devices
    "enroll_rate": 0.5,  # enrollment attempts per second and gateway (then refused: no gateway floods the cloud)
    "enroll_burst": 20,
    "require_gateway_certs": False,  # only gateways with a verified certificate (edgefleet ca issue) relay enrollments
    # fleet (cloud.fleet.jobs): metric retention per tier, ghost silence, how often jobs run (seconds)
    "metrics_raw_s": 24 * 3600,
    "metrics_minute_s": 7 * 24 * 3600,
    "metrics_hour_s": 90 * 24 * 3600,
    "retention_interval_s": 300,
    # telemetry rows are kept this many days (0: for ever); on PostgreSQL whole day partitions are dropped
    "telemetry_retention_days": 0.0,
    "config_push_s": 30,
    "ghost_after_s": 7 * 24 * 3600,
    "console": True,  # the operator console on the API's port
    "metrics_bind": "",  # HOST:PORT: Prometheus metrics with no token on a listener of their own
    # N coordinators over one PostgreSQL (cloud.coordination, docs/DEPLOY.md)
    "coordinator_id": "",  # this coordinator's name in the lease and gateway_sessions; default HOST-PID
    "lease_ttl": 5.0,  # seconds one grant of the leader lease lasts; another coordinator leads within ttl + 1 s
    "api_advertise": "",  # the API's URL as the other coordinators reach it (default: http://API_HOST:API_PORT)
    "ingest_writers": 4,  # PostgreSQL: gateways' batches written by this many connections side by side
    "command_poll": 5.0,  # seconds between looks for queued commands of the gateways held here (NOTIFY's fallback)
    "log_level": "info",
    "log_format": "json",
}


@click.command()
@node_options("Where keys, the API token, allowed_gateways and the SQLite store live.")
@click.option("--bind", help="Gateway-facing endpoint to bind, e.g. tcp://0.0.0.0:7700 (port * for any).")
@click.option("--api-host", help="Address of the operator HTTP API.")
@click.option("--api-port", type=int, help="Port of the operator HTTP API (0 for any).")
@click.option("--database", help="SQLAlchemy URL of the store (default: sqlite in the data directory).")
@click.option("--heartbeat", type=float, help="Heartbeat interval in seconds; a gateway silent for 3 is dead.")
@click.option("--webhook", "webhooks", multiple=True, metavar="URL", help="POST every alert event here (repeatable).")
@click.option("--release-key", "release_keys", multiple=True, metavar="PEM", help="Trust this release public key; repeat.")
@click.option("--release-chunk-kb", type=int, help="Chunk size of new releases in KiB (smaller: finer resume on slow links).")
@click.option("--ca-dir", help="Fleet CA directory (edgefleet ca init): enables zero-touch enrollment.")
@click.option("--cert-days", type=float, help="Lifetime in days of the device certificates it issues [90].")
@click.option("--require-gateway-certs", is_flag=True, default=None,
              help="Only gateways that presented a verified certificate (edgefleet ca issue) may relay enrollments.")
@click.option("--console/--no-console", default=None, help="Serve the operator console on the API's port [on].")
@click.option("--metrics-bind", metavar="HOST:PORT",
              help="Also serve Prometheus metrics with no token on this address (GET /metrics on the API needs one).")
@click.option("--coordinator-id", help="This coordinator's name among N over one PostgreSQL [HOST-PID].")
@click.option("--lease-ttl", type=float, help="Seconds one grant of the leader lease lasts [5]: the takeover bound is it + 1 s.")
@click.option("--api-advertise", metavar="URL", help="With N coordinators: this API's URL as the others reach it "
              "(they forward leader-only calls to the leader) [http://API_HOST:API_PORT].")
@click.option("--command-poll", type=float, help="With N coordinators: seconds between looks for queued commands [5] "
              "(a command made on another coordinator wakes this one at once by NOTIFY; this is the fallback).")
@click.option("--ingest-writers", type=int, help="On PostgreSQL: write gateways' batches over this many connections side "
              "by side [4] (a gateway's batches keep one, so their order); SQLite has one writer.")
@click.option("--telemetry-retention-days", type=float,
              help="Keep telemetry rows this many days [0: for ever]. On PostgreSQL the leader drops "
              "whole day partitions older than that (docs/DEPLOY.md).")
def cloud(config_path: str | None, **flags: object) -> None:
    """Run the cloud coordinator: gateway sessions, the store, the operator API.

    Alert rules, webhooks and firmware releases come from the config file
    (alert_rules = [{type = "offline", name = "device_offline", after_s = 600}, ...],
    webhooks = ["https://..."], firmware_releases = ["1.0.0", "1.1.0"]). Firmware
    manifests are published only when signed by a key in release_keys =
    ["release.key.pub"] (or --release-key); release_delta_bases = 3.

    Gateways are admitted by CURVE public key, one per line in
    DATA_DIR/allowed_gateways. The operator token is in DATA_DIR/api_token;
    `edgefleet devices list --data-dir DATA_DIR` uses it.
    """
    cfg = node_config(config_path, DEFAULTS, flags, repeatable=("webhooks", "release_keys"), node="cloud")
    from cloud.alerts.service import AlertSettings
    from cloud.coordination import LeaseSettings
    from cloud.driver import CloudConfig, run_cloud
    from cloud.releases.plan import ReleaseSettings
    from cloud.security.enrollment import parse_rules

    alert_settings = AlertSettings.from_config(cfg["alert_rules"], cfg["firmware_releases"])
    alert_settings = _ghost_threshold(alert_settings, float(cfg["ghost_after_s"]))

    counters = run_node(
        "cloud",
        run_cloud(
            CloudConfig(
                data_dir=Path(cfg["data_dir"]),
                bind=cfg["bind"],
                api_host=cfg["api_host"],
                api_port=cfg["api_port"],
                database=cfg["database"],
                heartbeat_s=cfg["heartbeat"],
                webhooks=tuple(cfg["webhooks"]),
                alerts=alert_settings,
                release_keys=tuple(cfg["release_keys"]),
                releases=ReleaseSettings(delta_bases=cfg["release_delta_bases"], chunk_size=cfg["release_chunk_kb"] << 10),
                ca_dir=cfg["ca_dir"],
                ca_passphrase=_intermediate_passphrase(),
                cert_days=cfg["cert_days"],
                enroll_rules=parse_rules(cfg["enroll_rules"]),
                enroll_rate=cfg["enroll_rate"],
                enroll_burst=cfg["enroll_burst"],
                require_gateway_certs=cfg["require_gateway_certs"],
                fleet=_fleet_jobs(cfg),
                console=bool(cfg["console"]),
                metrics_bind=str(cfg["metrics_bind"] or ""),
                coordinator_id=str(cfg["coordinator_id"] or ""),
                lease=LeaseSettings(ttl_s=float(cfg["lease_ttl"])),
                command_poll_s=float(cfg["command_poll"]),
                ingest_writers=_positive(cfg["ingest_writers"], "ingest_writers"),
                api_advertise=str(cfg["api_advertise"] or ""),
            )
        )
    )
    click.echo(f"cloud: {counters['stored']} records stored, {counters['duplicates']} duplicates dropped, "
               f"{counters['firmware_bytes_sent']} firmware bytes sent to gateways", err=True)


def _intermediate_passphrase() -> bytes | None:
    """EDGEFLEET_CA_INTERMEDIATE_PASSPHRASE, if the CA's intermediate key was written encrypted."""
    import os

    value = os.environ.get("EDGEFLEET_CA_INTERMEDIATE_PASSPHRASE", "")
    return value.encode() if value else None


def _fleet_jobs(cfg: dict) -> object:
    from cloud.fleet.jobs import FleetJobs
    from cloud.fleet.rollup import Retention

    retention = Retention(
        raw_ms=int(cfg["metrics_raw_s"] * 1000),
        minute_ms=int(cfg["metrics_minute_s"] * 1000),
        hour_ms=int(cfg["metrics_hour_s"] * 1000),
    )  # ConfigError names the tier that does not fit
    keep_days = float(cfg["telemetry_retention_days"])
    if keep_days < 0:
        from common.errors import ConfigError

        raise ConfigError(f"telemetry_retention_days must be 0 (keep for ever) or more, got {keep_days!r}")
    return FleetJobs(
        retention=retention,
        telemetry_keep_ms=int(keep_days * 86_400_000) or None,
        retention_interval_s=float(cfg["retention_interval_s"]),
        config_push_s=float(cfg["config_push_s"]),
        ghost_after_s=float(cfg["ghost_after_s"]),
    )


def _ghost_threshold(settings: object, ghost_after_s: float) -> object:
    """The ghost_device rule fires after ``ghost_after_s`` of silence, as `devices ghosts` lists them."""
    import dataclasses

    from cloud.alerts.service import GHOST_METRIC
    from common.alerting import ThresholdRule

    rules = tuple(
        dataclasses.replace(r, threshold=ghost_after_s)
        if isinstance(r, ThresholdRule) and r.metric == GHOST_METRIC else r
        for r in settings.rules  # type: ignore[attr-defined]
    )
    return dataclasses.replace(settings, rules=rules)  # type: ignore[type-var]


def _positive(value: object, name: str) -> int:
    """A count of 1 or more (from the config file or its flag), or a usage error naming the setting."""
    if type(value) is not int or value < 1:
        raise click.ClickException(f"cloud: {name} must be a whole number of 1 or more, got {value!r}")
    return value

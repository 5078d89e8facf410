"""The cloud's settings (``CloudConfig``, filled by ``edgefleet cloud``'s flags and config file), its operator
token, and the security service it builds from them (signing key, CA, enrollment rules)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cloud.alerts.service import AlertSettings
from cloud.coordination import LeaseSettings
from cloud.fleet.jobs import FleetJobs
from cloud.releases.plan import ReleaseSettings
from cloud.security.enrollment import EnrollRule, Enroller
from cloud.security.service import SecurityService
from cloud.security.signing import load_or_create_signing_key
from cloud.store import Store
from common.keys import write_atomic

__all__ = ["CloudConfig", "ensure_api_token", "security_service"]


@dataclass(frozen=True, slots=True)
class CloudConfig:
    data_dir: Path
    bind: str = "tcp://127.0.0.1:7700"  # gateway-facing socket
    api_host: str = "127.0.0.1"
    api_port: int = 8700
    database: str = ""  # SQLAlchemy URL; default sqlite in the data directory
    heartbeat_s: float = 1.0
    webhooks: tuple[str, ...] = ()  # every alert event is POSTed to each
    alerts: AlertSettings = field(default_factory=AlertSettings)
    alert_tick_s: float = 1.0
    maintenance_refresh_s: float = 30.0  # how often devices in maintenance are read from the store
    release_keys: tuple[str, ...] = ()  # PEM public keys trusted to sign firmware manifests
    releases: ReleaseSettings = field(default_factory=ReleaseSettings)
    ca_dir: str = ""  # the fleet CA (``edgefleet ca init``); empty: no enrollment
    ca_passphrase: bytes | None = None  # only if the intermediate key was written encrypted
    cert_days: float = 90.0  # lifetime of the device certificates it issues
    enroll_rules: tuple[EnrollRule, ...] = ()  # groups and config for new devices (cloud.security.enrollment)
    enroll_rate: float = 0.5  # enrollment attempts per second and gateway
    enroll_burst: int = 20
    require_gateway_certs: bool = False  # only gateways with a verified certificate relay enrollments
    rollout_tick_s: float = 1.0  # how often the rollout engines are ticked
    fleet: FleetJobs = field(default_factory=FleetJobs)  # retention, config push, ghosts (cloud.fleet.jobs)
    console: bool = True  # the operator console (cloud.console) on the API's port
    metrics_bind: str = ""  # HOST:PORT: Prometheus metrics on a listener of their own, no token (cloud.metrics.server)
    metrics_follow_s: float = 0.25  # how often the metrics follower looks for stored telemetry to fold
    coordinator_id: str = ""  # this coordinator's name in the lease and gateway_sessions; default HOST-PID
    lease: LeaseSettings = field(default_factory=LeaseSettings)  # the leader lease (PostgreSQL only)
    ingest_writers: int = 4  # PostgreSQL: batches written by this many connections side by side (SQLite: 1)
    command_poll_s: float = 5.0  # with N coordinators: how often queued commands are looked for (the wake-up's fallback)
    api_advertise: str = ""  # the API's URL as other coordinators reach it (forwarding to the leader); default: bound


def ensure_api_token(data_dir: Path) -> str:
    """The operator API token, made on first start and kept at 0600."""
    path = data_dir / "api_token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    write_atomic(path, (token + "\n").encode(), 0o600)
    return token


def security_service(cfg: CloudConfig, store: Store) -> SecurityService:
    """The signing key (made on first start) and, with ``ca_dir``, the issuing CA."""
    from cloud.security.ca import load_intermediate

    ca = load_intermediate(cfg.ca_dir, cfg.ca_passphrase) if cfg.ca_dir else None
    enroller = Enroller(cfg.enroll_rules, rate_per_s=cfg.enroll_rate, burst=cfg.enroll_burst)
    return SecurityService(store.security, store.fleet, load_or_create_signing_key(cfg.data_dir), ca=ca, enroller=enroller,
                           cert_days=cfg.cert_days)

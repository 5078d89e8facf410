"""A fleet scenario, read from TOML: sites, devices, hours, link models, releases and faults.

    [fleet]      name, sites, devices_per_site, hours, seed
    [timing]     heartbeat_s, sample_interval_s (one aggregated record per device per interval),
                 samples_per_record (the one-minute samples each record summarises)
    [link]       the default link model of every site's uplink: bandwidth_bytes_s (the gateway's
                 byte-rate cap), loss, latency_ms = [min, max], outages_per_day, outage_minutes =
                 [min, max], windows = [[cron, seconds], ...] (state/bulk drain windows, UTC)
    [[link.site]] overrides for some sites: sites = [1, 2, ...] plus any key of [link]
    [rollout]    maintenance windows (cron, seconds) per site, canary, waves, soak_s, thresholds
    [[release]]  version, at_hour, bad (its health check fails), size_mb
    [faults]     gateway_crashes (random, each down_minutes = [min, max]), power_cut_rate (share of
                 updates cut at a random persisted step or mid-write), revocations (random devices),
                 revoke_at_hour
    [[faults.crash]] explicit: site, at_hour, down_minutes
    [[faults.revoke]] explicit: device, at_hour
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from common.errors import ConfigError

__all__ = ["Crash", "FleetScenario", "LinkModel", "Release", "Revoke", "load_scenario"]


@dataclass(frozen=True, slots=True)
class LinkModel:
    bandwidth_bytes_s: float = 50_000.0
    loss: float = 0.0
    latency_ms: tuple[float, float] = (20.0, 120.0)
    outages_per_day: float = 0.0
    outage_minutes: tuple[float, float] = (30.0, 240.0)
    windows: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    at_hour: float
    bad: bool = False
    size_mb: float = 64.0


@dataclass(frozen=True, slots=True)
class Crash:
    site: int
    at_hour: float
    down_minutes: float


@dataclass(frozen=True, slots=True)
class Revoke:
    device: str
    at_hour: float


@dataclass(frozen=True, slots=True)
class FleetScenario:
    name: str = "small"
    seed: int = 7
    sites: int = 3
    devices_per_site: int = 8
    hours: float = 6.0
    heartbeat_s: float = 60.0
    sample_interval_s: float = 300.0
    samples_per_record: int = 5
    device_buffer_bytes: int = 64 * 1024
    outbox_bytes: int = 4 * 1024 * 1024
    link: LinkModel = field(default_factory=LinkModel)
    site_links: dict[int, LinkModel] = field(default_factory=dict)
    maintenance: tuple[tuple[str, float], ...] = (("0 * * * *", 1800.0),)
    canary: int = 2
    waves: tuple[str, ...] = ("50%", "100%")
    soak_s: float = 1800.0
    failure_percent: float = 20.0
    install_minutes: tuple[float, float] = (2.0, 6.0)
    lan_bytes_s: float = 2_000_000.0
    releases: tuple[Release, ...] = ()
    crashes: tuple[Crash, ...] = ()
    random_crashes: int = 0
    crash_minutes: tuple[float, float] = (5.0, 30.0)
    power_cut_rate: float = 0.0
    revocations: tuple[Revoke, ...] = ()
    random_revocations: int = 0
    revoke_at_hour: float = 1.0

    @property
    def devices(self) -> int:
        return self.sites * self.devices_per_site

    def link_of(self, site: int) -> LinkModel:
        return self.site_links.get(site, self.link)


def _link(base: LinkModel, raw: dict[str, Any], where: str) -> LinkModel:
    known = {f.name for f in fields(LinkModel)}
    extra = set(raw) - known - {"sites"}
    if extra:
        raise ConfigError(f"scenario {where}: unknown link keys {sorted(extra)}")
    kw: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
    for k in ("latency_ms", "outage_minutes"):
        if k in kw:
            kw[k] = tuple(float(x) for x in kw[k])
    if "windows" in kw:
        kw["windows"] = tuple((str(c), float(s)) for c, s in kw["windows"])
    return replace(base, **kw)


def load_scenario(path: str | Path, *, seed: int | None = None) -> FleetScenario:
    """The scenario in TOML file ``path`` (``ConfigError`` naming the file and the key on a bad one)."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"scenario {str(p)!r}: {exc}") from exc
    fleet, timing, rollout, faults = (raw.get(k, {}) for k in ("fleet", "timing", "rollout", "faults"))
    kw: dict[str, Any] = {"name": fleet.get("name", p.stem)}
    for k in ("seed", "sites", "devices_per_site", "hours"):
        if k in fleet:
            kw[k] = fleet[k]
    for k in ("heartbeat_s", "sample_interval_s", "samples_per_record", "device_buffer_bytes", "outbox_bytes"):
        if k in timing:
            kw[k] = timing[k]
    link_raw = dict(raw.get("link", {}))
    site_raw = link_raw.pop("site", [])
    kw["link"] = _link(LinkModel(), link_raw, str(p))
    kw["site_links"] = {int(s): _link(kw["link"], o, str(p)) for o in site_raw for s in o.get("sites", [])}
    if "maintenance" in rollout:
        kw["maintenance"] = tuple((str(c), float(s)) for c, s in rollout["maintenance"])
    for k in ("canary", "soak_s", "failure_percent", "lan_bytes_s"):
        if k in rollout:
            kw[k] = rollout[k]
    if "waves" in rollout:
        kw["waves"] = tuple(str(w) for w in rollout["waves"])
    if "install_minutes" in rollout:
        kw["install_minutes"] = tuple(float(x) for x in rollout["install_minutes"])
    kw["releases"] = tuple(Release(str(r["version"]), float(r["at_hour"]), bool(r.get("bad", False)),
                                   float(r.get("size_mb", 64.0))) for r in raw.get("release", []))
    kw["crashes"] = tuple(Crash(int(c["site"]), float(c["at_hour"]), float(c.get("down_minutes", 15.0)))
                          for c in faults.get("crash", []))
    kw["revocations"] = tuple(Revoke(str(r["device"]), float(r["at_hour"])) for r in faults.get("revoke", []))
    for k in ("random_crashes", "power_cut_rate", "random_revocations", "revoke_at_hour"):
        if k in faults:
            kw[k] = faults[k]
    if "crash_minutes" in faults:
        kw["crash_minutes"] = tuple(float(x) for x in faults["crash_minutes"])
    if seed is not None:
        kw["seed"] = seed
    try:
        sc = FleetScenario(**kw)
    except TypeError as exc:
        raise ConfigError(f"scenario {str(p)!r}: {exc}") from exc
    if sc.sites < 1 or sc.devices_per_site < 1 or sc.hours <= 0:
        raise ConfigError(f"scenario {str(p)!r}: sites, devices_per_site and hours must be positive")
    return sc

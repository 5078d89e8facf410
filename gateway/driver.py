"""The gateway's process: its core on asyncio, the outbox in LMDB, a ROUTER for devices, a DEALER to the cloud.

Devices are admitted by CURVE key from ``allowed_devices`` in the data
directory (re-read when it changes). The outbox has one stream per class with a
byte quota and a TTL on the steady clock; when bulk or state is full its oldest
records are evicted, and every eviction or expiry becomes a ``gap`` report per
device and contiguous range, queued (in the same commit) in the critical stream
for the cloud. Commands for devices are held in a second durable queue.

After binding, ``endpoints.json`` in the data directory names the
device-facing endpoint and the gateway's public key, so tools can find a
gateway that bound an ephemeral port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq.asyncio

from common.clock import SteadyClock, wall_ms
from common.durable_queue import DurableQueue
from common.effects import InventoryTaken, Start, TakeInventory
from common.inventory import host_inventory
from common.fileio import write_atomic
from common.keys import Allowlist, load_or_create_keypair, start_authenticator
from common.process import Periodic, stop_on_signals
from common.protocol import STREAMS
from common.protocol.codec import decode_forwarding
from common.runner import NodeRunner
from common.shaping import LinkWindows, TokenBucket
from common.sockets import ServerSocket, UpstreamLink
from common.streams import GATEWAY_POLICIES, StreamPolicy
from gateway.core import COMMANDS, OUTBOX, GatewayCore, gap_reports
from gateway.site_alerts import SiteAlerts, site_rules

__all__ = ["GatewayConfig", "run_gateway"]

log = logging.getLogger("edgefleet.gateway")

@dataclass(frozen=True, slots=True)
class GatewayConfig:
    gateway_id: str
    site: str
    data_dir: Path
    cloud: str  # the cloud's ZeroMQ endpoint
    cloud_key: bytes  # the cloud's CURVE public key (Z85)
    bind: str = "tcp://127.0.0.1:7701"  # device-facing socket
    heartbeat_s: float = 1.0
    policies: dict[str, StreamPolicy] = field(default_factory=lambda: dict(GATEWAY_POLICIES))
    durable: bool = True
    uplink_bytes_per_s: float = 0.0  # 0: no cap
    uplink_burst_bytes: float = 2048
    link_windows: tuple[tuple[str, float], ...] = ()  # (crontab, seconds); empty: always open
    timezone: str = "UTC"
    status_interval_s: float = 5.0
    # rules the gateway evaluates for its devices while its uplink is down (gateway.site_alerts);
    # None: SITE_RULES, (): none
    site_alert_rules: tuple[dict[str, Any], ...] | None = None
    inventory_interval_s: float = 60.0  # how often its own inventory is read (reported only on change)


async def run_gateway(cfg: GatewayConfig, stop: asyncio.Event | None = None) -> dict[str, object]:
    """Run until ``stop`` is set (SIGTERM/SIGINT set it when run from the CLI)."""
    stop = stop or asyncio.Event()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keys = load_or_create_keypair(cfg.data_dir)
    allow = Allowlist(cfg.data_dir / "allowed_devices")
    steady = SteadyClock(cfg.data_dir / "steady.json").start()
    outbox = DurableQueue(
        str(cfg.data_dir / "outbox"),
        streams=cfg.policies,
        durable=cfg.durable,
        clock=steady.now_ms,
        on_drop=gap_reports(cfg.gateway_id, wall_ms),
    ).start()
    held = DurableQueue(str(cfg.data_dir / "commands"), max_bytes=16 << 20).start()
    ctx = zmq.asyncio.Context()
    auth = start_authenticator(ctx, allow)
    core = GatewayCore(
        cfg.gateway_id,
        cfg.site,
        outbox,
        commands=held,
        rng=random.Random(),
        heartbeat_s=cfg.heartbeat_s,
        bucket=TokenBucket(cfg.uplink_bytes_per_s, cfg.uplink_burst_bytes) if cfg.uplink_bytes_per_s else None,
        link_windows=LinkWindows(cfg.link_windows, cfg.timezone) if cfg.link_windows else None,
        status_interval_s=cfg.status_interval_s,
        site_alerts=_site_alerts(cfg),
        inventory_interval_s=cfg.inventory_interval_s,
    )
    runner: NodeRunner
    # TelemetryBatch frames arrive as TelemetryEntries: checked, each record already its outbox entry
    server = ServerSocket(ctx, cfg.bind, keys, lambda e: runner.feed(e), decoder=decode_forwarding)
    link = UpstreamLink(ctx, cfg.cloud, keys, cfg.cloud_key, lambda e: runner.feed(e))
    def take_inventory(_effect: TakeInventory) -> None:
        def read() -> dict[str, object]:
            return {"role": "gateway", "site": cfg.site, **host_inventory(cfg.data_dir)}

        loop.run_in_executor(None, read).add_done_callback(
            lambda f: runner.feed(InventoryTaken(f.result())) if f.exception() is None else log.warning(
                "inventory not read", extra={"error": str(f.exception())})
        )

    runner = NodeRunner(core, queues={OUTBOX: outbox, COMMANDS: held}, server=server, upstream=link, log=log,
                        extra={TakeInventory: take_inventory})
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop)
    endpoint = server.start()
    write_atomic(
        cfg.data_dir / "endpoints.json",
        json.dumps({"devices": endpoint, "public_key": keys.public.decode()}).encode(),
        0o644,
    )
    checkpoint = Periodic(loop, 5.0, steady.checkpoint)  # so ages survive a power cut
    link.open()
    runner.feed(Start())
    log.info("gateway started", extra={"gateway": cfg.gateway_id, "site": cfg.site, "devices": endpoint,
                                      "backlog": {s: outbox.stats(s).count for s in STREAMS}})
    try:
        await stop.wait()
    finally:
        checkpoint.cancel()
        await runner.stop()
        await server.stop()
        await link.close()
        auth.stop()
        ctx.destroy(linger=0)
        stats = {**core.counters, **core.status(loop.time()), "refused_sends": sum(server.refused.values()), "auth_refused": allow.refused}
        outbox.close()
        held.close()
        steady.checkpoint()
        write_atomic(cfg.data_dir / "stats.json", json.dumps(stats).encode(), 0o644)
        log.info("gateway stopped", extra={"records_in": core.counters["records_in"]})
    return stats


def _site_alerts(cfg: GatewayConfig) -> SiteAlerts | None:
    rules = site_rules(cfg.site_alert_rules)
    return SiteAlerts(cfg.gateway_id, rules) if rules else None

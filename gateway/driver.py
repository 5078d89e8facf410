"""The gateway's process: its core on asyncio, the outbox in LMDB, a ROUTER for devices, a DEALER to the cloud.

Devices are admitted by CURVE key from ``allowed_devices`` in the data
directory (re-read when it changes). After binding, ``endpoints.json`` in the
data directory names the device-facing endpoint and the gateway's public key,
so tools can find a gateway that bound an ephemeral port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import zmq.asyncio

from common.durable_queue import DurableQueue
from common.effects import Start
from common.keys import Allowlist, load_or_create_keypair, start_authenticator, write_atomic
from common.runner import NodeRunner
from common.sockets import ServerSocket, UpstreamLink
from gateway.core import OUTBOX, GatewayCore

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
    outbox_max_bytes: int = 1024 * 1024 * 1024
    durable: bool = True


async def run_gateway(cfg: GatewayConfig, stop: asyncio.Event | None = None) -> dict[str, int]:
    """Run until ``stop`` is set (SIGTERM/SIGINT set it when run from the CLI)."""
    stop = stop or asyncio.Event()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keys = load_or_create_keypair(cfg.data_dir)
    allow = Allowlist(cfg.data_dir / "allowed_devices")
    outbox = DurableQueue(str(cfg.data_dir / "outbox"), max_bytes=cfg.outbox_max_bytes, durable=cfg.durable).start()
    ctx = zmq.asyncio.Context()
    auth = start_authenticator(ctx, allow)
    core = GatewayCore(cfg.gateway_id, cfg.site, outbox, rng=random.Random(), heartbeat_s=cfg.heartbeat_s)
    runner: NodeRunner
    server = ServerSocket(ctx, cfg.bind, keys, lambda e: runner.feed(e))
    link = UpstreamLink(ctx, cfg.cloud, keys, cfg.cloud_key, lambda e: runner.feed(e))
    runner = NodeRunner(core, queues={OUTBOX: outbox}, server=server, upstream=link, log=log)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    endpoint = server.start()
    write_atomic(
        cfg.data_dir / "endpoints.json",
        json.dumps({"devices": endpoint, "public_key": keys.public.decode()}).encode(),
        0o644,
    )
    link.open()
    runner.feed(Start())
    log.info("gateway started", extra={"gateway": cfg.gateway_id, "site": cfg.site, "devices": endpoint, "backlog": len(outbox)})
    try:
        await stop.wait()
    finally:
        await runner.stop()
        await server.stop()
        await link.close()
        auth.stop()
        ctx.destroy(linger=0)
        stats = {**core.counters, "backlog": len(outbox), "refused_sends": sum(server.refused.values()), "auth_refused": allow.refused}
        outbox.close()
        write_atomic(cfg.data_dir / "stats.json", json.dumps(stats).encode(), 0o644)
        log.info("gateway stopped", extra=stats)
    return stats

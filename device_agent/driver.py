"""The device agent's process: its core on asyncio, its buffer in LMDB, its link to the gateway.

On SIGTERM (or ``stop``) sampling stops, the buffer is drained to the gateway
for up to ``drain_s`` seconds, ``stats.json`` records what was produced and
acknowledged, and the process exits. Whatever is still unacknowledged stays in
the buffer for the next start.
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
from common.effects import Sampled, Start, Stop, TakeSample
from common.keys import load_or_create_keypair
from common.keys import write_atomic
from common.runner import NodeRunner
from common.sockets import UpstreamLink
from device_agent.core import BUFFER, AgentCore
from device_agent.sampler import sample_metrics

__all__ = ["AgentConfig", "run_agent"]

log = logging.getLogger("edgefleet.agent")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    device_id: str
    site: str
    data_dir: Path
    gateway: str  # ZeroMQ endpoint, e.g. tcp://127.0.0.1:7701
    gateway_key: bytes  # the gateway's CURVE public key (Z85)
    sample_interval_s: float = 1.0
    heartbeat_s: float = 1.0
    buffer_max_bytes: int = 64 * 1024 * 1024
    drain_s: float = 10.0


async def run_agent(cfg: AgentConfig, stop: asyncio.Event | None = None) -> dict[str, int]:
    """Run until ``stop`` is set (SIGTERM/SIGINT set it when run from the CLI); returns the final stats."""
    stop = stop or asyncio.Event()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    keys = load_or_create_keypair(cfg.data_dir)
    buffer = DurableQueue(str(cfg.data_dir / "buffer"), max_bytes=cfg.buffer_max_bytes).start()
    ctx = zmq.asyncio.Context()
    core = AgentCore(
        cfg.device_id,
        cfg.site,
        buffer,
        rng=random.Random(),
        sample_interval_s=cfg.sample_interval_s,
        heartbeat_s=cfg.heartbeat_s,
    )
    runner: NodeRunner
    link = UpstreamLink(ctx, cfg.gateway, keys, cfg.gateway_key, lambda e: runner.feed(e))
    runner = NodeRunner(
        core,
        queues={BUFFER: buffer},
        upstream=link,
        extra={TakeSample: lambda _: runner.feed(Sampled(sample_metrics(str(cfg.data_dir))))},
        log=log,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    first_seq = buffer.stats().next_seq
    link.open()
    runner.feed(Start())
    log.info("agent started", extra={"device": cfg.device_id, "gateway": cfg.gateway, "buffered": len(buffer)})
    try:
        await stop.wait()
        runner.feed(Stop())
        deadline = loop.time() + cfg.drain_s
        while not core.drained and loop.time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await runner.stop()
        await link.close()
        ctx.destroy(linger=0)
        stats = {
            "device_id": cfg.device_id,
            "first_seq": first_seq,
            "last_seq": core.last_seq,
            "produced": core.produced,
            "acked": core.sender.acked,
            "buffered": len(buffer),
            "reconnects": core.uplink.reconnects,
            "resends": core.sender.resends,
        }
        buffer.close()
        write_atomic(cfg.data_dir / "stats.json", json.dumps(stats).encode(), 0o644)
        log.info("agent stopped", extra=stats)
    return stats

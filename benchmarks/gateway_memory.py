"""Peak resident memory of a real ``edgefleet gateway`` holding a 1,000,000-record backlog with 1,000 devices connected.

The backlog is written straight into the gateway's outbox LMDB before it starts
(``benchmarks/backlog.py``: 50 devices, 10 metrics each, bulk stream). A real
``edgefleet cloud`` and ``edgefleet gateway`` then start as processes
(``simulations.fleet.ProcFleet``), the gateway's uplink through a ``FaultProxy``
that is cut at once: the site is in an outage, so the backlog stays on disk.

Then load-generator processes (this script with ``--loadgen``, ``--devices`` split
between ``--loadgens`` of them) connect the devices, each with its own CURVE
DEALER and key, admitted beforehand with ``ProcFleet.allow``. Each device says
Hello, sends three TelemetryBatches of ten bulk records, then a heartbeat every
second and one more batch every ten seconds, as an agent would. Once every device
has its HelloAck and its first batches acknowledged, the gateway's RSS is sampled
with psutil every 0.2 s for ``--seconds`` (phase "outage").

With ``--drain-seconds`` > 0 the uplink is then restored and the gateway drains
the backlog to the cloud, uncapped, with the devices still connected, and RSS is
sampled for that long too (phase "draining"). LMDB reads the outbox through a
memory map, so the pages it reads count in RSS as file-backed pages (page cache
the kernel can drop, not heap): ``/proc/PID/status``'s RssAnon and RssFile are
reported at each phase's peak.

Progress goes to stdout; the last line is one JSON object with ``rss_mb`` (the
largest RSS during the outage phase; target < 150), ``devices_connected`` and
``backlog_records``.

    .venv/bin/python benchmarks/gateway_memory.py [--devices 1000] [--records 1000000] [--seconds 20] [--json-only]
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

GATEWAY, SITE = "gw-1", "site-1"
MB = 1024 * 1024


# -- the load generator (a separate process) ---------------------------------------------


async def _device(ctx, name: str, keys, endpoint: str, server_key: bytes, state: dict, stop: asyncio.Event) -> None:
    import zmq

    from common.keys import secure_client
    from common.protocol import (
        SUPPORTED_VERSIONS,
        Heartbeat,
        Hello,
        HelloAck,
        TelemetryAck,
        TelemetryBatch,
        TelemetryRecord,
        decode,
        encode,
    )

    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    secure_client(sock, keys, server_key)
    sock.connect(endpoint)
    seq = acked = 0

    def batch() -> bytes:
        nonlocal seq
        now = int(time.time() * 1000)
        records = []
        for _ in range(10):
            seq += 1
            records.append(TelemetryRecord(seq, now, "metrics", {"temp_c": 21.5 + seq % 7, "rpm": 1500 + seq % 40, "cpu_percent": 12.5}))
        return encode(TelemetryBatch(name, "bulk", acked, records))

    async def receive() -> None:
        nonlocal acked
        while True:
            msg = decode(await sock.recv())
            if isinstance(msg, HelloAck):
                state["hello"] += 1
                for _ in range(3):
                    await sock.send(batch())
            elif isinstance(msg, TelemetryAck):
                if msg.up_to >= 30 and acked < 30:
                    state["ready"] += 1
                acked = max(acked, msg.up_to)

    reader = asyncio.get_running_loop().create_task(receive())
    try:
        await sock.send(encode(Hello(name, "device", SITE, *SUPPORTED_VERSIONS)))
        tick = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
            tick += 1
            await sock.send(encode(Heartbeat(int(time.time() * 1000))))
            if tick % 10 == 0 and acked:
                await sock.send(batch())
    finally:
        reader.cancel()
        sock.close(linger=0)


async def _loadgen(spec: dict) -> None:
    """Connect ``spec['devices']`` and report progress as JSON lines on stdout until stdin closes."""
    import zmq.asyncio

    from common.keys import load_or_create_keypair

    ctx = zmq.asyncio.Context(io_threads=1)
    ctx.set(zmq.MAX_SOCKETS, 4 * len(spec["devices"]) + 64)
    state = {"hello": 0, "ready": 0}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: (sys.stdin.readline() or True) and stop.set())
    tasks = []
    for i, (name, key_dir) in enumerate(spec["devices"]):
        keys = load_or_create_keypair(key_dir)
        tasks.append(loop.create_task(_device(ctx, name, keys, spec["endpoint"], spec["server_key"].encode(), state, stop)))
        if i % spec["per_tick"] == spec["per_tick"] - 1:
            await asyncio.sleep(0.1)  # ramp up: a reconnect storm is another benchmark
    while not stop.is_set():
        print(json.dumps(state), flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    await asyncio.gather(*tasks, return_exceptions=True)
    ctx.term()


# -- the benchmark -----------------------------------------------------------------------


class LoadGen:
    """One load-generator process; ``state`` is its latest progress line."""

    def __init__(self, spec_path: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--loadgen", str(spec_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        from simulations.teardown import stop_at_exit

        stop_at_exit(self.popen)  # killed at exit if an interrupted run left it
        self.state = {"hello": 0, "ready": 0}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                self.state = json.loads(line)
            except ValueError:
                pass

    def stop(self) -> None:
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            try:
                self.popen.stdin.write("stop\n")
                self.popen.stdin.close()
                self.popen.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.popen.kill()
                self.popen.wait()


def rss_split(pid: int) -> dict[str, float]:
    """RssAnon, RssFile and RssShmem from /proc (MB)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def watch(proc: psutil.Process, seconds: float, every: float = 0.2) -> dict[str, object]:
    """Sample RSS for ``seconds``; the peak, and the /proc split at the peak."""
    peak, split, samples = 0, {}, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss = proc.memory_info().rss
        samples += 1
        if rss > peak:
            peak, split = rss, rss_split(proc.pid)
        time.sleep(every)
    return {"rss_mb": round(peak / MB, 1), **{k.lower(): v for k, v in split.items()}, "samples": samples}


def run(args: argparse.Namespace, say) -> dict[str, object]:
    from benchmarks.backlog import prefill
    from simulations.fleet import ProcFleet

    root = Path(tempfile.mkdtemp(prefix="edgefleet-gwmem-"))
    fleet = ProcFleet(root, heartbeat_s=1.0)
    gens: list[LoadGen] = []
    try:
        gw_dir = fleet.dir(GATEWAY)
        gw_dir.mkdir(parents=True)
        prefill(gw_dir, args.records, say=say)
        t0 = time.monotonic()
        names = [f"load-{i:04d}" for i in range(args.devices)]
        for name in names:
            fleet.allow(GATEWAY, name)
        say(f"{args.devices} device keys made and admitted in {time.monotonic() - t0:.1f} s")

        fleet.start_cloud(["--log-level", "warning"])
        eps = fleet.start_gateway(GATEWAY, SITE, proxy=True, extra=["--log-level", "warning"])
        fleet.proxies[GATEWAY].cut()  # the outage: the backlog stays on disk
        gw = psutil.Process(fleet.procs[GATEWAY].popen.pid)  # type: ignore[union-attr]
        time.sleep(2.0)
        before_cut = fleet.api("/v1/telemetry/summary")["rows"]  # type: ignore[index]
        idle = watch(gw, 3.0)
        say(f"gateway pid {gw.pid}, uplink cut ({before_cut} records reached the cloud first); "
            f"idle with the backlog: RSS {idle['rss_mb']} MB")

        per_gen = -(-args.devices // args.loadgens)
        for g in range(args.loadgens):
            chunk = names[g * per_gen:(g + 1) * per_gen]
            spec = {
                "devices": [(n, str(fleet.dir(n))) for n in chunk],
                "endpoint": eps["devices"],
                "server_key": eps["public_key"],
                "per_tick": max(1, args.connect_rate // 10 // args.loadgens),
            }
            path = root / f"loadgen-{g}.json"
            path.write_text(json.dumps(spec))
            gens.append(LoadGen(path))
        deadline = time.monotonic() + 120
        while sum(g.state["ready"] for g in gens) < args.devices:
            if time.monotonic() > deadline:
                hello, ready = sum(g.state["hello"] for g in gens), sum(g.state["ready"] for g in gens)
                raise RuntimeError(f"after 120 s only {hello} devices had a HelloAck and {ready} their batches acknowledged")
            time.sleep(0.2)
        connected = sum(g.state["ready"] for g in gens)
        say(f"{connected} devices connected, batches acknowledged, {time.monotonic() - t0:.0f} s in; watching for {args.seconds:g} s")
        outage = watch(gw, args.seconds)
        say(f"outage: peak RSS {outage['rss_mb']} MB (anon {outage.get('rssanon')} MB, file {outage.get('rssfile')} MB)")

        draining: dict[str, object] = {}
        if args.drain_seconds > 0:
            proxy = fleet.proxies[GATEWAY]
            proxy.restore()
            t_restore, sent0 = time.monotonic(), proxy.stats().bytes_to_target
            while proxy.stats().bytes_to_target < sent0 + 65536:  # its reconnect backoff reached up to 30 s in the outage
                if time.monotonic() - t_restore > 90:
                    raise RuntimeError("the gateway did not resume forwarding within 90 s of the uplink's return")
                time.sleep(0.1)
            say(f"uplink restored; the gateway resumed forwarding {time.monotonic() - t_restore:.1f} s later")
            draining = watch(gw, args.drain_seconds)
            draining["resumed_after_s"] = round(time.monotonic() - t_restore - args.drain_seconds, 1)
            stored = fleet.api("/v1/telemetry/summary")["rows"]  # type: ignore[index]
            draining["stored_in_cloud"] = stored
            say(f"draining: peak RSS {draining['rss_mb']} MB (anon {draining.get('rssanon')} MB, file "
                f"{draining.get('rssfile')} MB); {stored:,} records in the cloud after {args.drain_seconds:g} s")
        still = sum(g.state["hello"] for g in gens)
        for g in gens:
            g.stop()
        fleet.stop([GATEWAY])
        stats = json.loads((gw_dir / "stats.json").read_text())
        return {
            "rss_mb": outage["rss_mb"],
            "rss_anon_mb": outage.get("rssanon"),
            "rss_file_mb": outage.get("rssfile"),
            "devices_connected": connected,
            "devices_hello": still,
            "backlog_records": args.records,
            "stored_in_cloud_before_cut": before_cut,
            "idle_rss_mb": idle["rss_mb"],
            "draining": draining or None,
            "records_in": stats.get("records_in"),
            "devices_connected_at_stop": stats.get("devices_connected"),
            "outbox_bulk_records_at_stop": stats.get("backlog.bulk.records"),
            "seconds": args.seconds,
        }
    finally:
        for g in gens:
            g.stop()
        fleet.kill_all()
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices to connect (default 1000)")
    parser.add_argument("--records", type=int, default=1_000_000, help="backlog records (default 1,000,000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to sample RSS with the devices connected")
    parser.add_argument("--drain-seconds", type=float, default=0.0, help="then restore the uplink and sample this long while it drains")
    parser.add_argument("--loadgens", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--connect-rate", type=int, default=200, help="new connections per second (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    parser.add_argument("--quick", action="store_true", help="a 200,000-record backlog, 5 s of sampling (make bench)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        asyncio.run(_loadgen(json.loads(Path(args.loadgen).read_text())))
        return 0
    if args.quick:
        args.records, args.seconds, args.drain_seconds = min(args.records, 200_000), min(args.seconds, 5.0), 0.0
    from simulations.teardown import exit_on_signals

    exit_on_signals()  # SIGTERM/SIGINT unwind to run()'s finally: load generators and fleet stopped

    def say(line: str) -> None:
        if not args.json_only:
            print(line, flush=True)

    out = run(args, say)
    say(f"gateway with {out['devices_connected']} devices and a {out['backlog_records']:,}-record backlog: "
        f"peak RSS {out['rss_mb']} MB (target < 150)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

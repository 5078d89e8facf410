"""Time to drain a 1,000,000-record gateway backlog to the cloud through a capped uplink, and critical latency meanwhile.

The outage is simulated by its result: before the gateway starts, the backlog is
written straight into its outbox LMDB (``benchmarks/backlog.py``: 50 devices, 10
metrics each, bulk stream, through ``DurableQueue.append_many_sync``). Then a real
``edgefleet cloud`` and a real ``edgefleet gateway`` start as processes
(``simulations.fleet.ProcFleet``), the gateway with ``--uplink-rate CAP`` and its
uplink through a ``FaultProxy`` that only counts bytes. The cap is chosen from the
backlog's measured compressed size (the gateway's token bucket charges the zstd
blob of each ForwardBatch plus 64 bytes), so the drain should take about
``--target-seconds``; it is printed.

While it drains:

- the proxy's ``bytes_to_target`` (gateway to cloud, on the wire: CURVE and ZMTP
  framing, heartbeats and status reports included) is sampled every 100 ms;
- a probe device (a CURVE DEALER in this process speaking the real protocol: Hello,
  then one ``TelemetryBatch`` of one record on the ``critical`` stream every
  ``--critical-interval`` s) sends alerts to the gateway;
- the cloud's SQLite database is polled read-only every 50 ms: the number of
  telemetry rows (``max(rowid)``: the store never deletes) and the probe's rows.

The drain runs from the gateway's first byte on the uplink to the moment the cloud
holds every backlog record. A critical record's latency runs from its send to the
first poll that finds it stored (so it includes up to one 50 ms poll interval; the
cloud's own ``received_ms``, stamped when its store starts the batch's transaction,
is reported beside it). At the end the cloud's ``/v1/telemetry/summary`` must show
every record exactly once.

The script knows every batch's boundary and charge (it packs the backlog as the
gateway will), so for every 100 ms sample it can tell whether the gateway's window
was full (8,000 records sent and not yet stored: the cloud set the pace) or open
(the token bucket did); utilisation and critical latency are also reported split
that way. ``--renice -10`` runs the cloud and gateway (every thread) at a higher
priority, for a machine shared with other work.

Progress goes to stdout; the last line is one JSON object with ``drain_seconds``,
``cap_bytes_per_s``, ``uplink_utilisation`` (mean wire bytes/s during the drain over
the cap; target >= 0.90), ``max_1s_over_cap`` (the largest wire bytes in any 1 s
sliding window over the cap; target <= 1.05), ``critical_p99_ms`` and ``records``.

    .venv/bin/python benchmarks/drain.py [--records 1000000] [--target-seconds 60] [--cap B/S] [--burst B] [--quick]
                                         [--max-seconds S]
                                         [--renice -10] [--dump samples.json] [--json-only]
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
import zmq  # noqa: E402

from benchmarks.backlog import prefill  # noqa: E402
from common.durable_queue import DurableQueue  # noqa: E402
from common.keys import load_or_create_keypair, secure_client  # noqa: E402
from common.protocol import (  # noqa: E402
    SUPPORTED_VERSIONS,
    Hello,
    HelloAck,
    TelemetryAck,
    TelemetryBatch,
    TelemetryRecord,
    decode,
    encode,
    pack_entries,
)
from common.streams import GATEWAY_POLICIES  # noqa: E402
from gateway.core import FRAME_OVERHEAD  # noqa: E402
from simulations.fleet import ProcFleet  # noqa: E402
from simulations.teardown import exit_on_signals  # noqa: E402

GATEWAY, SITE, PROBE = "gw-1", "site-1", "probe-1"
BATCH_MAX, BATCH_BYTES = 1000, 512 * 1024  # what the gateway's QueueSender reads per ForwardBatch
WINDOW = 8000  # records the gateway keeps in flight per stream (GatewayCore's default)


def batch_table(outbox: Path) -> list[tuple[int, int]]:
    """``[(last record, bytes charged so far)]`` per ForwardBatch, packed as the gateway will pack them.

    The gateway reads ``batch_max`` (1000) entries per batch and acknowledgements
    arrive per batch, so a window of 8000 always leaves room for whole batches:
    the batch boundaries are fixed, and the bucket charges each ``len(blob) + 64``.
    """
    q = DurableQueue(str(outbox), streams=dict(GATEWAY_POLICIES)).start()
    table, total, after = [], 0, 0
    try:
        while items := q.read(after=after, limit=BATCH_MAX, max_bytes=BATCH_BYTES, stream="bulk"):
            total += len(pack_entries([p for _, p in items])) + FRAME_OVERHEAD
            after = items[-1][0]
            table.append((after, total))
    finally:
        q.close()
    return table


def records_sent(table: list[tuple[int, int]], wire: int, per_batch: float) -> int:
    """Records the gateway had sent once ``wire`` bytes crossed the uplink (``per_batch``: framing beyond the charge)."""
    lo, hi = 0, len(table)  # the number of whole batches whose bytes fit in ``wire``
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if table[mid - 1][1] + mid * per_batch <= wire:
            lo = mid
        else:
            hi = mid - 1
    return table[lo - 1][0] if lo else 0


# -- samplers ----------------------------------------------------------------------------


@dataclass
class Samples:
    uplink: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, proxy bytes_to_target)
    stored: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, telemetry rows in the cloud)
    probe_seen: dict[int, tuple[float, int]] = field(default_factory=dict)  # seq -> (monotonic first seen, received_ms)


def sample_uplink(fleet: ProcFleet, out: Samples, stop: threading.Event, every: float = 0.1) -> None:
    proxy = fleet.proxies[GATEWAY]
    nxt = time.monotonic()
    while not stop.is_set():
        out.uplink.append((time.monotonic(), proxy.stats().bytes_to_target))
        nxt += every
        stop.wait(max(0.0, nxt - time.monotonic()))


def poll_cloud(db: Path, out: Samples, stop: threading.Event, every: float = 0.05) -> None:
    """Read-only polls of the cloud's SQLite (WAL: readers never block its writer)."""
    while not db.exists() and not stop.is_set():
        time.sleep(0.05)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    try:
        while not stop.is_set():
            try:
                con.execute("BEGIN")
                rows = con.execute("SELECT coalesce(max(rowid), 0) FROM telemetry").fetchone()[0]
                probe = con.execute(
                    "SELECT seq, received_ms FROM telemetry WHERE device_id = ? AND stream = 'critical'", (PROBE,)
                ).fetchall()
                con.execute("COMMIT")
            except sqlite3.OperationalError:  # the cloud is still creating its tables
                con.execute("ROLLBACK") if con.in_transaction else None
                stop.wait(every)
                continue
            now = time.monotonic()
            out.stored.append((now, rows))
            for seq, received_ms in probe:
                out.probe_seen.setdefault(seq, (now, received_ms))
            stop.wait(every)
    finally:
        con.close()


class Probe:
    """A device that raises one critical alert every ``interval`` s through the gateway (real protocol, CURVE)."""

    def __init__(self, fleet: ProcFleet, interval: float) -> None:
        fleet.allow(GATEWAY, PROBE)
        self.keys = load_or_create_keypair(fleet.dir(PROBE))
        eps = fleet.endpoints(GATEWAY)
        self.endpoint, self.server_key = eps["devices"], eps["public_key"].encode()
        self.interval = interval
        self.sent: dict[int, tuple[float, int]] = {}  # seq -> (monotonic, wall ms) at send
        self.acked = 0
        self.sending = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def _run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        secure_client(sock, self.keys, self.server_key)
        sock.connect(self.endpoint)
        try:
            sock.send(encode(Hello(PROBE, "device", SITE, *SUPPORTED_VERSIONS)))
            if not sock.poll(10_000):
                raise RuntimeError(f"probe: no HelloAck from the gateway at {self.endpoint} within 10 s")
            msg = decode(sock.recv())
            if not isinstance(msg, HelloAck):
                raise RuntimeError(f"probe: expected HelloAck, got {msg!r}")
            self.sending.wait()
            seq, nxt = 0, time.monotonic()
            while not self.stop.is_set():
                seq += 1
                wall = int(time.time() * 1000)
                rec = TelemetryRecord(seq, wall, "alert", {"code": "overtemp", "n": seq})
                self.sent[seq] = (time.monotonic(), wall)
                sock.send(encode(TelemetryBatch(PROBE, "critical", self.acked, [rec])))
                nxt += self.interval
                while (left := nxt - time.monotonic()) > 0 and sock.poll(left * 1000):
                    ack = decode(sock.recv())
                    if isinstance(ack, TelemetryAck):
                        self.acked = max(self.acked, ack.up_to)
        finally:
            sock.close()
            ctx.term()


# -- the run -----------------------------------------------------------------------------


def sliding_max(samples: list[tuple[float, int]], start: float, end: float, window: float = 1.0) -> tuple[float, float]:
    """The largest bytes/s over any span of >= ``window`` s between consecutive samples in [start, end]."""
    pts = [(t, b) for t, b in samples if start <= t <= end]
    best, at, j = 0.0, start, 0
    for i in range(len(pts)):
        j = max(j, i + 1)
        while j < len(pts) and pts[j][0] - pts[i][0] < window:
            j += 1
        if j >= len(pts):
            break
        rate = (pts[j][1] - pts[i][1]) / (pts[j][0] - pts[i][0])
        if rate > best:
            best, at = rate, pts[i][0]
    return best, at


def value_at(samples: list[tuple[float, int]], t: float) -> int:
    """The last sample at or before ``t`` (0 before the first)."""
    v = 0
    for ts, b in samples:
        if ts > t:
            break
        v = b
    return v


def pct(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile, rounded to 0.1; None for no values (JSON has no NaN)."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))], 1)


def run(args: argparse.Namespace, say) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="edgefleet-drain-"))
    fleet = ProcFleet(root, heartbeat_s=1.0)
    samples, stop = Samples(), threading.Event()
    threads: list[threading.Thread] = []
    probe: Probe | None = None
    try:
        gw_dir = fleet.dir(GATEWAY)
        gw_dir.mkdir(parents=True)
        backlog = prefill(gw_dir, args.records, devices=args.devices, say=say)
        table = batch_table(gw_dir / "outbox")
        charged = table[-1][1]
        cap = args.cap or int(round(charged / args.target_seconds, -3))
        say(f"compressed: {charged / args.records:.1f} B/record as the bucket charges it ({charged / 2**20:.1f} MiB in all, "
            f"{backlog['record_bytes'] / (charged / args.records):.1f}x); cap {cap:,} B/s "
            f"(expect ~{charged / cap:.0f} s), burst {f'{args.burst:,} B' if args.burst else 'the gateway default'}")

        fleet.start_cloud(["--log-level", "warning"])
        extra = ["--uplink-rate", str(cap), "--log-level", "warning"]
        if args.burst:
            extra += ["--uplink-burst", str(args.burst)]
        threads = [
            threading.Thread(target=poll_cloud, args=(fleet.dir("cloud") / "cloud.db", samples, stop), daemon=True),
        ]
        threads[0].start()
        t_launch = time.monotonic()
        fleet.start_gateway(GATEWAY, SITE, proxy=True, extra=extra)
        up = threading.Thread(target=sample_uplink, args=(fleet, samples, stop), daemon=True)
        up.start()
        threads.append(up)
        probe = Probe(fleet, args.critical_interval)
        probe.thread.start()

        # the drain starts with the gateway's first byte on the uplink
        while not samples.uplink or samples.uplink[-1][1] == 0:
            if time.monotonic() - t_launch > 60:
                raise RuntimeError(f"the gateway sent nothing upstream within 60 s; see {root / 'logs'}")
            time.sleep(0.02)
        t_first = next(t for t, b in samples.uplink if b > 0)
        while samples.uplink[-1][1] < 4096:  # more than a handshake and a Hello: the session is up
            if time.monotonic() - t_first > 60:
                raise RuntimeError(f"the gateway's cloud session did not come up within 60 s; see {root / 'logs'}")
            time.sleep(0.02)
        t_batch = next(t for t, b in samples.uplink if b >= 4096)
        say(f"gateway connected {t_first - t_launch:.1f} s after launch, first batch {t_batch - t_first:.2f} s later; draining")
        probe.sending.set()
        procs = {n: psutil.Process(fleet.procs[n].popen.pid) for n in ("cloud", GATEWAY)}  # type: ignore[union-attr]
        if args.renice:
            renice(procs.values(), args.renice)
        cpu0 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}

        deadline = t_first + (args.max_seconds or max(600.0, 10 * charged / cap))
        last_print = t_first
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            rows = samples.stored[-1][1] if samples.stored else 0
            bulk = rows - len(samples.probe_seen)
            if bulk >= args.records * 0.97 and not probe.stop.is_set():
                probe.stop.set()  # the last alerts still go out while bulk is draining
            if bulk >= args.records:
                break
            if now > deadline:
                raise RuntimeError(f"drain not finished after {now - t_first:.0f} s: {bulk:,} of {args.records:,} stored")
            if now - last_print >= 5 and not args.json_only:
                last_print = now
                wire = samples.uplink[-1][1]
                say(f"  {now - t_first:5.1f} s: {bulk:>9,} stored, {wire / 2**20:6.1f} MiB on the wire, "
                    f"mean {wire / (now - t_first) / cap:.3f} of the cap")
        cpu = {n: sum(p.cpu_times()[:2]) - cpu0[n] for n, p in procs.items()}
        t_end = next(t for t, r in samples.stored if r - sum(1 for s in samples.probe_seen.values() if s[0] <= t) >= args.records)
        probe.stop.set()
        probe.thread.join(10)

        # every alert sent must be stored; wait for the stragglers
        wait_until = time.monotonic() + 30
        while set(probe.sent) - set(samples.probe_seen) and time.monotonic() < wait_until:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(10)

        drain_s = t_end - t_first
        wire_start, wire_end = value_at(samples.uplink, t_first), value_at(samples.uplink, t_end)
        peak, peak_at = sliding_max(samples.uplink, t_first, t_end)
        lat = [(samples.probe_seen[s][0] - sent[0]) * 1000 for s, sent in probe.sent.items() if s in samples.probe_seen]
        lat_rx = [samples.probe_seen[s][1] - sent[1] for s, sent in probe.sent.items() if s in samples.probe_seen]
        during = [s for s, sent in probe.sent.items() if sent[0] <= t_end]
        summary = fleet.api("/v1/telemetry/summary")
        assert isinstance(summary, dict)
        gw_stats = _gateway_counters(fleet)
        if args.dump:
            Path(args.dump).write_text(json.dumps({
                "t_first": t_first, "t_end": t_end, "uplink": samples.uplink, "stored": samples.stored,
                "probe_sent": probe.sent, "probe_seen": samples.probe_seen,
            }))
        return {
            "drain_seconds": round(drain_s, 2),
            "cap_bytes_per_s": cap,
            "uplink_utilisation": round((wire_end - wire_start) / drain_s / cap, 3),
            "max_1s_over_cap": round(peak / cap, 3),
            "max_1s_at_s": round(peak_at - t_first, 1),
            "critical_p50_ms": pct(lat, 50),
            "critical_p99_ms": pct(lat, 99),
            "critical_max_ms": round(max(lat), 1) if lat else None,
            "critical_p99_received_ms": pct([float(x) for x in lat_rx], 99),
            "critical_sent": len(probe.sent),
            "critical_sent_during_drain": len(during),
            "critical_stored": len(set(probe.sent) & set(samples.probe_seen)),
            "records": args.records,
            "stored_rows": summary["rows"],
            "duplicates_stored": summary["duplicates_stored"],
            "wire_bytes": wire_end - wire_start,
            "bucket_bytes": charged,
            "wire_over_bucket": round((wire_end - wire_start) / charged, 3),
            "burst_bytes": args.burst or None,
            "renice": args.renice,
            "gateway_uplink_bytes": gw_stats.get("uplink_bytes"),
            "cpu_seconds": {n: round(c, 1) for n, c in cpu.items()},
            "first_batch_after_s": round(t_batch - t_first, 2),
            **window_analysis(samples, table, probe, t_first, t_end, wire_end - wire_start - charged, cap, args.records),
            "bytes_per_s_first_5s": [
                value_at(samples.uplink, t_first + k + 1) - value_at(samples.uplink, t_first + k) for k in range(min(5, int(drain_s)))
            ],
        }
    finally:
        stop.set()
        if probe is not None:
            probe.stop.set()
            probe.sending.set()
        fleet.kill_all()
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def window_analysis(
    samples: Samples, table: list[tuple[int, int]], probe: Probe, t0: float, t1: float, framing: int, cap: int, records: int
) -> dict[str, object]:
    """Split the drain into time the gateway's window was full (8000 records sent and not yet stored: the cloud
    sets the pace) and the rest (the token bucket sets it), and the uplink rate and critical latency in each."""
    per_batch = max(0.0, framing / len(table))
    spans = {True: [0.0, 0], False: [0.0, 0]}  # window full? -> [seconds, wire bytes]
    full_at: list[tuple[float, bool]] = []
    pts = [(t, b) for t, b in samples.uplink if t0 <= t <= t1]
    for (ta, ba), (tb, bb) in zip(pts, pts[1:], strict=False):
        stored = value_at(samples.stored, ta) - sum(1 for seen in samples.probe_seen.values() if seen[0] <= ta)
        full = records_sent(table, ba, per_batch) - stored >= WINDOW - BATCH_MAX
        spans[full][0] += tb - ta
        spans[full][1] += bb - ba
        full_at.append((ta, full))
    lat = {True: [], False: []}
    for seq, (sent, _) in probe.sent.items():
        if seq in samples.probe_seen and t0 <= sent <= t1:
            full = next((f for t, f in reversed(full_at) if t <= sent), False)
            lat[full].append((samples.probe_seen[seq][0] - sent) * 1000)
    return {
        "window_full_seconds": round(spans[True][0], 1),
        "utilisation_window_open": round(spans[False][1] / spans[False][0] / cap, 3) if spans[False][0] else None,
        "utilisation_window_full": round(spans[True][1] / spans[True][0] / cap, 3) if spans[True][0] else None,
        "critical_p50_ms_window_open": pct(lat[False], 50),
        "critical_p99_ms_window_open": pct(lat[False], 99),
        "critical_p50_ms_window_full": pct(lat[True], 50),
        "critical_p99_ms_window_full": pct(lat[True], 99),
        "wire_framing_per_batch": round(per_batch, 1),
    }


def renice(procs, value: int) -> None:
    """Set the nice value of every thread of ``procs`` (on Linux a nice value belongs to a thread, not a process)."""
    for p in procs:
        for t in p.threads():
            try:
                os.setpriority(os.PRIO_PROCESS, t.id, value)
            except ProcessLookupError:
                pass  # the thread ended meanwhile


def _gateway_counters(fleet: ProcFleet) -> dict[str, object]:
    """The gateway's own counters, from its stats.json after a clean stop."""
    try:
        fleet.stop([GATEWAY])
        return json.loads((fleet.dir(GATEWAY) / "stats.json").read_text())
    except (OSError, RuntimeError, ValueError):
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="backlog records (default 1,000,000)")
    parser.add_argument("--devices", type=int, default=50, help="devices the backlog came from (default 50)")
    parser.add_argument("--target-seconds", type=float, default=60.0, help="pick the cap so the drain takes about this (default 60 s)")
    parser.add_argument("--cap", type=int, default=0, help="uplink cap in bytes/s (default: from --target-seconds)")
    parser.add_argument("--burst", type=int, default=0, help="--uplink-burst for the gateway (default: the gateway's own)")
    parser.add_argument("--critical-interval", type=float, default=0.2, help="seconds between probe alerts (default 0.2)")
    parser.add_argument("--renice", type=int, default=0,
                        help="nice value for the cloud and gateway processes, e.g. -10 on a machine shared with other work")
    parser.add_argument("--dump", help="write the raw samples (uplink bytes, stored rows, alert times) to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="give up if the drain has not finished after this long (default max(600, 10x expected))")
    parser.add_argument("--quick", action="store_true", help="100,000 records, a 20 s drain, give up after 120 s (make bench)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    if args.quick:
        args.records, args.target_seconds = min(args.records, 100_000), min(args.target_seconds, 20.0)
        args.max_seconds = args.max_seconds or 120.0
    exit_on_signals()  # SIGTERM/SIGINT unwind to run()'s finally, which stops the cloud and the gateway

    def say(line: str) -> None:
        if not args.json_only:
            print(line, flush=True)

    out = run(args, say)
    say(f"drained {out['records']:,} records in {out['drain_seconds']} s at a cap of {out['cap_bytes_per_s']:,} B/s: "
        f"utilisation {out['uplink_utilisation']} (target >= 0.90), max 1 s {out['max_1s_over_cap']} of the cap "
        f"(target <= 1.05), critical p99 {out['critical_p99_ms']} ms")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

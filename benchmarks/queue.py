"""Durable appends/s through DurableQueue, beside a raw LMDB baseline.

EdgeFleet side: 50 asyncio producers, each keeping up to 100 appends in flight,
one future per append, each resolved only once its group commit is fsync'd;
200-byte payloads.

Baseline side (no EdgeFleet code): the same LMDB settings, 1,000 cursor puts
per fsync'd commit, ``append=True``, 8-byte big-endian keys. The same loop with
``txn.put`` (slower) is measured too and reported as context only.

Each side runs ``--runs`` times, alternating, each run in a fresh directory.
The best run of each side is reported (the machine is shared: slower runs are
other work getting in the way), with the medians beside it. Progress goes to
stdout; the last line is one JSON object.

``--busy N`` measures on a busy machine of a stated kind: N processes (default
1) each keep one core busy with a Python loop at normal priority for the whole
run, started and stopped by this script, so anyone can reproduce "busy". The
floor is 0.35 quiet and 0.33 with ``--busy`` (``floor`` in the JSON). The load
average and CPU pressure at the start and end are reported either way, to say
how quiet "quiet" was. ``--quick`` runs 5 x 200,000 records (``make bench``).

    .venv/bin/python benchmarks/queue.py [--records N] [--runs R] [--busy [N]] [--quick] [--json-only]
"""

from __future__ import annotations

import os
import sys

# This file is named queue.py: run as a script, its directory would shadow the
# standard library's ``queue`` module. Put the repository root there instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402

import lmdb  # noqa: E402

from common.durable_queue import DurableQueue  # noqa: E402
from simulations.teardown import exit_on_signals, spin_cores  # noqa: E402

PRODUCERS = 50
IN_FLIGHT = 100
PAYLOAD_SIZE = 200
BASELINE_BATCH = 1000
FLOOR, FLOOR_BUSY = 0.35, 0.33


def machine_load() -> dict[str, float]:
    """The 1-minute load average and the share of time some task waited for a CPU (PSI, last 10 s)."""
    out = {"loadavg_1m": round(os.getloadavg()[0], 2)}
    try:
        with open("/proc/pressure/cpu") as f:
            out["cpu_pressure_some_10s"] = float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


async def _producer(q: DurableQueue, n: int, payload: bytes) -> int:
    window: deque[asyncio.Future[list[int]]] = deque()
    last = 0
    for _ in range(n):
        if len(window) >= IN_FLIGHT:
            last = (await window.popleft())[0]
        window.append(q.append(payload))
    while window:
        last = (await window.popleft())[0]
    return last


async def _edgefleet_run(path: str, records: int, payload: bytes) -> float:
    q = DurableQueue(path, max_bytes=records * len(payload) * 2, durable=True)
    q.start()
    try:
        per, extra = divmod(records, PRODUCERS)
        counts = [per + (i < extra) for i in range(PRODUCERS)]
        t0 = time.perf_counter()
        await asyncio.gather(*(_producer(q, n, payload) for n in counts))
        elapsed = time.perf_counter() - t0
        stats = q.stats()
        if stats.count != records or stats.next_seq != records + 1:
            raise SystemExit(f"benchmark broken: queue holds {stats.count} records, expected {records}")
        return elapsed
    finally:
        q.close()


def _baseline_run(path: str, records: int, payload: bytes, *, cursor: bool = True) -> float:
    env = lmdb.open(
        path, map_size=max(64 << 20, records * len(payload) * 6), sync=True, metasync=True, readahead=False
    )
    key = struct.Struct(">Q").pack
    try:
        t0 = time.perf_counter()
        seq = 1
        while seq <= records:
            end = min(seq + BASELINE_BATCH, records + 1)
            with env.begin(write=True) as txn:
                # a cursor's put is LMDB's fastest path from Python; txn.put is the plain one
                put = txn.cursor().put if cursor else txn.put
                for s in range(seq, end):
                    put(key(s), payload, append=True)
            seq = end
        elapsed = time.perf_counter() - t0
        if env.stat()["entries"] != records:
            raise SystemExit("baseline broken: wrong number of entries")
        return elapsed
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=None, help="appends per run (default 400000; --quick 200000)")
    parser.add_argument("--runs", type=int, default=None, help="runs per side; the best is reported (default 5 and --quick)")
    parser.add_argument("--busy", type=int, nargs="?", const=1, default=0,
                        help="keep N cores busy (default 1) with a spinning process each while measuring")
    parser.add_argument("--quick", action="store_true", help="5 runs of 200,000 records (make bench)")
    parser.add_argument("--dir", default=None, help="where to put the LMDB files (default: a temp dir)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    args.records = args.records or (200_000 if args.quick else 400_000)
    args.runs = args.runs or 5
    exit_on_signals()  # a SIGTERM still stops the spinners and removes the temp dir

    def say(line: str) -> None:
        if not args.json_only:
            print(line, flush=True)

    payload = os.urandom(PAYLOAD_SIZE)
    root = tempfile.mkdtemp(prefix="ef-bench-queue-", dir=args.dir)
    ours: list[float] = []
    base: list[float] = []
    base_txn: list[float] = []
    load_before = machine_load()
    spinners = spin_cores(args.busy)
    if args.busy:
        say(f"busy: {args.busy} process(es) spinning, one core each")
    try:
        for i in range(args.runs):
            path = os.path.join(root, f"q{i}")
            secs = asyncio.run(_edgefleet_run(path, args.records, payload))
            ours.append(args.records / secs)
            shutil.rmtree(path)
            path = os.path.join(root, f"b{i}")
            secs = _baseline_run(path, args.records, payload)
            base.append(args.records / secs)
            shutil.rmtree(path)
            path = os.path.join(root, f"t{i}")
            secs = _baseline_run(path, args.records, payload, cursor=False)
            base_txn.append(args.records / secs)
            shutil.rmtree(path)
            say(
                f"run {i + 1}/{args.runs}: DurableQueue {ours[-1]:>10,.0f} appends/s   raw LMDB {base[-1]:>10,.0f} puts/s"
                f"   (raw LMDB with txn.put {base_txn[-1]:>10,.0f} puts/s)"
            )
        load_after = machine_load()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)

    ours_best, base_best = max(ours), max(base)
    ours_med, base_med = statistics.median(ours), statistics.median(base)
    say(f"best:   DurableQueue {ours_best:,.0f} appends/s, raw LMDB {base_best:,.0f} puts/s, ratio {ours_best / base_best:.2f}")
    say(f"median: DurableQueue {ours_med:,.0f} appends/s, raw LMDB {base_med:,.0f} puts/s, ratio {ours_med / base_med:.2f}")
    print(
        json.dumps(
            {
                "benchmark": "queue",
                "appends_per_s": round(ours_best),
                "baseline_appends_per_s": round(base_best),
                "ratio": round(ours_best / base_best, 3),
                "floor": FLOOR_BUSY if args.busy else FLOOR,
                "busy": args.busy,
                "machine_before": load_before,
                "machine_after": load_after,
                "statistic": f"best of {args.runs} runs per side",
                "median_appends_per_s": round(ours_med),
                "median_baseline_appends_per_s": round(base_med),
                "median_ratio": round(ours_med / base_med, 3),
                "baseline_txn_put_appends_per_s": round(max(base_txn)),
                "ratio_to_txn_put": round(ours_best / max(base_txn), 3),
                "records": args.records,
                "payload_bytes": PAYLOAD_SIZE,
                "producers": PRODUCERS,
                "in_flight_per_producer": IN_FLIGHT,
                "baseline_batch": BASELINE_BATCH,
                "runs_appends_per_s": [round(x) for x in ours],
                "runs_baseline_appends_per_s": [round(x) for x in base],
                "runs_baseline_txn_put_appends_per_s": [round(x) for x in base_txn],
            }
        )
    )


if __name__ == "__main__":
    main()

"""Durable records/s from 200 device connections through one real gateway, beside a raw baseline.

EdgeFleet side: a real ``edgefleet gateway`` process (``simulations.fleet.ProcFleet``:
GatewayCore, NodeRunner, ServerSocket, the DurableQueue outbox with fsync on
every commit, CurveZMQ with the ZAP allowlist). Its uplink names a cloud that is
not running, so every record stays in the outbox; the bulk quota is raised
(``--bulk-quota-mb``) so nothing is evicted while we measure. Site alerts run
with the gateway's default rules (``--no-site-alerts`` turns them off), and with
the uplink down every batch is observed for them, as at a site cut off.

Load: ``--gen-procs`` separate processes holding ``--devices`` CURVE DEALER
sockets between them, each with its own admitted key. Each device says Hello,
then streams TelemetryBatch(device_id, "bulk", base, records) of ``--batch``
records, keeping up to ``--in-flight`` batches unacknowledged (and never more
than the credit the gateway grants), and moves on when a TelemetryAck
(cumulative, with credit) arrives. Records acknowledged per second are counted
over ``--seconds`` after ``--warmup`` seconds. The generator uses only pyzmq and
msgpack; its frames are checked once against the EdgeFleet codec.

Baseline side (no EdgeFleet code): the same generator against a plain pyzmq
ROUTER in its own process, CURVE on with a ZAP allowlist callback (like with
like): burst receive (NOBLOCK until zmq.Again), msgpack decode of each frame,
every record re-packed with its device and stream and appended to LMDB
(``append=True``, fsync on commit), one ack per batch. No validation, no dedup,
no quotas. Three variants, one after another in the same run:

- ``batch``: one fsync'd transaction per TelemetryBatch, then its ack (the
  baseline the acceptance names; ``baseline_records_per_s`` and ``ratio``);
- ``group``: one fsync'd transaction per burst of batches (group commit, the
  strongest simple pipeline: ``baseline_group_commit_records_per_s`` and
  ``ratio_to_group_commit_baseline``);
- ``batch_no_curve``: ``batch`` with CURVE off, for reference.

``batch`` waits for an fsync per 100 records, so it is bound by the disk's
fsync latency; ``group`` is bound by CPU, so its ratio is the measure of what
EdgeFleet's code costs over the raw building blocks.

After the run the gateway is stopped with SIGTERM and its outbox is checked to
hold at least every record the generators saw acknowledged. CPU time of the
gateway process over the counted window (per thread, and per record) is
reported too: on a shared machine it is steadier than records/s.

Progress goes to stdout; the last line is one JSON object with
``records_per_s``, ``baseline_records_per_s`` and ``ratio``.

    .venv/bin/python benchmarks/gateway_ingest.py [--devices 200] [--seconds 10] [--runs 1] [--json-only]
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
import socket  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import msgpack  # noqa: E402
import psutil  # noqa: E402
import zmq  # noqa: E402

# the wire protocol's numbers, spelled out so the generator and the baseline need no EdgeFleet code
HELLO, HELLO_ACK, HEARTBEAT, ERROR_REPLY, TELEMETRY_BATCH, TELEMETRY_ACK = 1, 2, 3, 4, 10, 11
VERSION = 1
STREAM = "bulk"
VALUES = {"temp_c": 21.5, "humidity": 40.25, "pressure_hpa": 1013.2, "vbat": 3.31, "rssi": -67, "status": "ok"}
KIND = "metrics"


# -- the load generator (child process; pyzmq + msgpack only) ----------------------------


def batch_frame(device_id: str, base: int, first_seq: int, n: int, ts_ms: int) -> bytes:
    """TelemetryBatch(device_id, "bulk", base, [TelemetryRecord(seq, ts_ms, "metrics", VALUES) ...]) as msgpack."""
    pack = msgpack.packb
    tail = pack(ts_ms) + pack(KIND) + pack(VALUES, use_bin_type=True)
    head = b"\x96" + pack(TELEMETRY_BATCH) + pack(VERSION) + pack(device_id) + pack(STREAM) + pack(base)
    head += b"\xdc" + struct.pack(">H", n)  # array 16: 16 <= n < 65536
    return head + b"".join([b"\x94" + pack(s) + tail for s in range(first_seq, first_seq + n)])


def run_generator(cfg: dict) -> dict:
    """Stream telemetry from ``cfg['devices']`` until ``cfg['t_end']`` (CLOCK_MONOTONIC, shared by processes)."""
    ctx = zmq.Context(io_threads=1)
    batch, cap = cfg["batch"], cfg["batch"] * cfg["in_flight"]
    poller = zmq.Poller()
    devs = []
    for device_id, public, secret in cfg["devices"]:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        if cfg["server_key"]:
            s.curve_secretkey, s.curve_publickey = secret.encode(), public.encode()
            s.curve_serverkey = cfg["server_key"].encode()
        s.connect(cfg["endpoint"])
        s.send(msgpack.packb([HELLO, VERSION, device_id, "device", "bench", VERSION, VERSION]))
        d = {"id": device_id, "sock": s, "next": 1, "acked": 0, "credit": 0}
        devs.append(d)
        poller.register(s, zmq.POLLIN)
    by_sock = {d["sock"]: d for d in devs}
    acked_total = sent = errors = 0
    at_start = at_end = None
    t_start, t_end = cfg["t_start"], cfg["t_end"]
    unpack = msgpack.unpackb
    while True:
        now = time.monotonic()
        if at_start is None and now >= t_start:
            at_start = (now, acked_total)
        if now >= t_end:
            at_end = (now, acked_total)
            break
        for sock, _ in poller.poll(50):
            d = by_sock[sock]
            while True:
                try:
                    m = unpack(sock.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
                kind = m[0]
                if kind == TELEMETRY_ACK:
                    if m[4] > d["acked"]:
                        acked_total += m[4] - d["acked"]
                        d["acked"] = m[4]
                    d["credit"] = m[5]
                elif kind == HELLO_ACK:
                    d["credit"] = m[5]
                elif kind == ERROR_REPLY:
                    errors += 1
                    if errors <= 5:
                        print(f"{d['id']}: error reply {m[2:]}", file=sys.stderr)
            limit = d["acked"] + min(d["credit"], cap)
            ts = int(time.time() * 1000)
            while d["next"] - 1 + batch <= limit:
                sock.send(batch_frame(d["id"], d["acked"], d["next"], batch, ts))
                d["next"] += batch
                sent += batch
    for d in devs:
        d["sock"].close(0)
    ctx.term()
    assert at_start is not None and at_end is not None
    return {
        "acked_in_window": at_end[1] - at_start[1],
        "window_s": at_end[0] - at_start[0],
        "acked_total": acked_total,
        "sent": sent,
        "errors": errors,
    }


# -- the raw baseline server (child process; pyzmq + msgpack + LMDB only) -----------------


def run_baseline_server(cfg: dict) -> None:
    import lmdb

    ctx = zmq.Context(io_threads=1)
    auth = None
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.RCVHWM, 10_000)
    if cfg["curve"]:
        from zmq.auth.thread import ThreadAuthenticator

        allowed = {k.encode() for k in cfg["allowed"]}

        class Allow:
            def callback(self, domain: str, key: bytes) -> bool:
                return key in allowed

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback("*", Allow())
        sock.curve_secretkey, sock.curve_publickey = cfg["secret"].encode(), cfg["public"].encode()
        sock.curve_server = True
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    env = lmdb.open(cfg["path"], map_size=64 << 30, sync=True, metasync=True, readahead=False)
    key = struct.Struct(">Q").pack
    pack, unpack = msgpack.Packer(use_bin_type=True).pack, msgpack.unpackb
    print(json.dumps({"endpoint": f"tcp://127.0.0.1:{port}"}), flush=True)
    n = records = commits = 0
    stop_at = cfg["t_stop"]
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while time.monotonic() < stop_at:
        if not poller.poll(100):
            continue
        frames = []
        try:
            while len(frames) < 1000:
                frames.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            pass
        # one fsync'd transaction per TelemetryBatch, or (group commit) one for the whole burst
        for part in [frames] if cfg["group"] else [[f] for f in frames]:
            acks = []
            with env.begin(write=True) as txn:
                put = txn.cursor().put
                for peer, frame in part:
                    m = unpack(frame)
                    if m[0] == TELEMETRY_BATCH:
                        device_id, stream, recs = m[2], m[3], m[5]
                        for r in recs:
                            n += 1
                            put(key(n), pack([device_id, stream, *r]), append=True)
                        records += len(recs)
                        acks.append((peer, pack([TELEMETRY_ACK, VERSION, device_id, stream, recs[-1][0], 2000])))
                    elif m[0] == HELLO:
                        acks.append((peer, pack([HELLO_ACK, VERSION, "baseline", VERSION, 1000, 2000])))
            commits += 1
            for peer, ack in acks:
                try:
                    sock.send_multipart([peer, ack], zmq.NOBLOCK)
                except zmq.ZMQError:  # a generator that finished and went away
                    pass
    print(json.dumps({"records": records, "commits": commits}), flush=True)
    sock.close(0)
    if auth is not None:
        auth.stop()
    ctx.term()
    env.close()


# -- the orchestrator --------------------------------------------------------------------


def _child(role: str, cfg: dict) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f"--child={role}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert p.stdin is not None
    p.stdin.write(json.dumps(cfg))
    p.stdin.close()
    from simulations.teardown import stop_at_exit

    return stop_at_exit(p)  # killed at exit if an interrupted run left it


def _drive(endpoint: str, server_key: str, keys: list[tuple[str, str, str]], args: argparse.Namespace,
           watch: list[int]) -> dict:
    """Run the generators against ``endpoint``; CPU seconds of the ``watch`` pids over the measured window."""
    t0 = time.monotonic()
    t_start = t0 + args.warmup
    t_end = t_start + args.seconds
    gens = []
    for i in range(args.gen_procs):
        cfg = {"endpoint": endpoint, "server_key": server_key, "devices": keys[i :: args.gen_procs],
               "batch": args.batch, "in_flight": args.in_flight, "t_start": t_start, "t_end": t_end}
        gens.append(_child("gen", cfg))
    procs = [psutil.Process(p) for p in watch] + [psutil.Process(g.pid) for g in gens]
    time.sleep(max(0.0, t_start - time.monotonic()))
    cpu0 = [sum(p.cpu_times()[:2]) for p in procs]
    threads0 = _thread_cpu(watch[0])
    time.sleep(max(0.0, t_end - time.monotonic()))
    cpu1 = [sum(p.cpu_times()[:2]) for p in procs]
    threads1 = _thread_cpu(watch[0])
    outs = []
    for g in gens:
        assert g.stdout is not None
        out = g.stdout.read()
        if g.wait(timeout=60) != 0:
            raise RuntimeError(f"a generator failed with exit code {g.returncode}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    window = statistics.mean(o["window_s"] for o in outs)
    acked = sum(o["acked_in_window"] for o in outs)
    cpu = [round(100 * (b - a) / args.seconds) for a, b in zip(cpu0, cpu1)]
    server_cpu_s = sum(b - a for a, b in list(zip(cpu0, cpu1))[: len(watch)])
    return {
        "records_per_s": acked / window,
        "server_cpu_us_per_record": 1e6 * server_cpu_s / max(acked, 1),
        "acked_total": sum(o["acked_total"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "server_cpu_percent": sum(cpu[: len(watch)]),
        "generator_cpu_percent": sum(cpu[len(watch) :]),
        "server_threads_cpu_percent": {
            name: round(100 * (t - threads0.get(name, 0.0)) / args.seconds) for name, t in sorted(threads1.items())
        },
    }


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``: the main thread, each other by its name and id."""
    out: dict[str, float] = {}
    for t in psutil.Process(pid).threads():
        try:
            name = "main" if t.id == pid else f"{Path(f'/proc/{pid}/task/{t.id}/comm').read_text().strip()}:{t.id}"
        except OSError:
            continue
        out[name] = t.user_time + t.system_time
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gateway_run(root: Path, keys: list[tuple[str, str, str]], args: argparse.Namespace, say) -> dict:
    from common.keys import load_or_create_keypair
    from simulations.fleet import ProcFleet

    fleet = ProcFleet(root, heartbeat_s=1.0)
    try:
        # a cloud that is not running: the gateway's records stay in its outbox
        load_or_create_keypair(fleet.dir("cloud"))
        (fleet.dir("cloud") / "endpoints.json").write_text(json.dumps({"gateways": f"tcp://127.0.0.1:{_free_port()}"}))
        fleet.dir("gw").mkdir(parents=True, exist_ok=True)
        for name, _, _ in keys:
            fleet.allow("gw", name)
        # a config file, not --bulk-quota-mb: the flag is a float and the config check wants the default's int.
        # Site alerts are on, with the rules a gateway runs by default, written out so the run says so; the
        # uplink is down (no cloud), so every batch is observed for them: the costliest case.
        conf = fleet.dir("gw") / "bench.toml"
        conf.write_text(f"bulk_quota_mb = {int(args.bulk_quota_mb)}\n" + _site_alert_rules_toml(args))
        extra = ["--config", str(conf), "--log-level", "warning"]
        eps = fleet.start_gateway("gw", "bench", extra=extra)
        pid = fleet.procs["gw"].popen.pid
        say(f"gateway pid {pid} on {eps['devices']}")
        spy = None
        if args.py_spy:  # sample the gateway over the measured window
            spy = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-p", str(pid), "-o", args.py_spy,
                 "-d", str(int(args.warmup + args.seconds)), "-r", "200", "--threads", "-f", "raw"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        res = _drive(eps["devices"], eps["public_key"], keys, args, [pid])
        if spy is not None:
            spy.wait()
        code = fleet.stop(["gw"], timeout_s=120)["gw"]
        stats = json.loads((fleet.dir("gw") / "stats.json").read_text())
        res.update(
            exit_code=code,
            outbox_records=stats["backlog.bulk.records"],
            gateway_records_in=stats["records_in"],
            evicted=stats["evicted.bulk"],
            acked_records_in_outbox=stats["backlog.bulk.records"] >= res["acked_total"] and stats["evicted.bulk"] == 0,
        )
        return res
    finally:
        fleet.kill_all()


def _site_alert_rules_toml(args: argparse.Namespace) -> str:
    """The gateway's default site alert rules (``gateway.site_alerts.SITE_RULES``) as TOML; none when off."""
    from gateway.site_alerts import SITE_RULES

    if args.no_site_alerts:
        return "site_alert_rules = []\n"
    return "".join("\n[[site_alert_rules]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in rule.items())
                   for rule in SITE_RULES)


def _baseline_run(root: Path, keys: list[tuple[str, str, str]], curve: bool, group: bool, args: argparse.Namespace) -> dict:
    server_keys = zmq.curve_keypair()
    path = root / f"lmdb-{'curve' if curve else 'plain'}-{'group' if group else 'batch'}"
    path.mkdir(parents=True)
    t_stop = time.monotonic() + args.warmup + args.seconds + 30
    srv = _child("baseline", {"curve": curve, "public": server_keys[0].decode(), "secret": server_keys[1].decode(),
                              "allowed": [k[1] for k in keys], "path": str(path), "t_stop": t_stop,
                              "group": group})
    assert srv.stdout is not None
    endpoint = json.loads(srv.stdout.readline())["endpoint"]
    try:
        res = _drive(endpoint, server_keys[0].decode() if curve else "", keys, args, [srv.pid])
    finally:
        srv.kill()
        srv.wait()
        shutil.rmtree(path, ignore_errors=True)
    return res


def _check_frames() -> None:
    """The generator's hand-built frames are what the EdgeFleet codec makes and accepts."""
    from common.protocol import TelemetryBatch, TelemetryRecord, decode, encode

    msg = TelemetryBatch("dev-x", STREAM, 7, [TelemetryRecord(s, 1234, KIND, dict(VALUES)) for s in range(8, 108)])
    frame = batch_frame("dev-x", 7, 8, 100, 1234)
    if decode(frame) != msg or frame != encode(msg):
        raise SystemExit("benchmark broken: the generator's frames differ from the codec's")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200, help="device connections (default 200)")
    parser.add_argument("--batch", type=int, default=100, help="records per TelemetryBatch (default 100)")
    parser.add_argument("--in-flight", type=int, default=8, help="unacknowledged batches per device (default 8)")
    parser.add_argument("--gen-procs", type=int, default=1, help="load generator processes (default 1)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before counting (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds counted (default 10)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each side, alternating; medians reported")
    parser.add_argument("--bulk-quota-mb", type=int, default=8192, help="the gateway's bulk outbox quota")
    parser.add_argument("--no-baseline", action="store_true", help="measure only the gateway")
    parser.add_argument("--no-site-alerts", action="store_true",
                        help="run the gateway without site alerts (a gateway runs them by default; they are on here)")
    parser.add_argument("--dir", default=None, help="where to put data directories (default: a temp dir)")
    parser.add_argument("--py-spy", metavar="FILE", help="write a py-spy profile (raw) of the gateway to FILE")
    parser.add_argument("--quick", action="store_true", help="2 s warm-up, 5 s counted, one run per side (make bench)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        cfg = json.loads(sys.stdin.read())
        if args.child == "gen":
            print(json.dumps(run_generator(cfg)), flush=True)
        else:
            run_baseline_server(cfg)
        return
    if args.quick:
        args.warmup, args.seconds, args.runs = min(args.warmup, 2.0), min(args.seconds, 5.0), 1
    from simulations.teardown import exit_on_signals

    exit_on_signals()  # SIGTERM/SIGINT unwind to the finally blocks that stop the gateway and the baselines

    def say(line: str) -> None:
        if not args.json_only:
            print(line, flush=True)

    from common.keys import load_or_create_keypair

    _check_frames()
    root = Path(tempfile.mkdtemp(prefix="ef-bench-ingest-", dir=args.dir))
    # baseline variants: (name, CURVE, group commit); "batch" (one fsync per TelemetryBatch, CURVE on) is the reference
    variants = [] if args.no_baseline else [("batch", True, False), ("group", True, True), ("batch_no_curve", False, False)]
    labels = {"batch": "raw baseline, fsync per batch, CURVE   ", "group": "raw baseline, group commit, CURVE     ",
              "batch_no_curve": "raw baseline, fsync per batch, no CURVE"}
    ours: list[dict] = []
    base: dict[str, list[dict]] = {name: [] for name, _, _ in variants}

    def show(label: str, r: dict, what: str = "server") -> None:
        say(f"{label}: {r['records_per_s']:>10,.0f} records/s  ({what} {r['server_cpu_percent']}% CPU, "
            f"{r['server_cpu_us_per_record']:.2f} us/record; generator {r['generator_cpu_percent']}%)")

    try:
        keys = []
        for i in range(args.devices):
            name = f"dev-{i:04d}"
            kp = load_or_create_keypair(root / "gw-run" / name)
            keys.append((name, kp.public.decode(), kp.secret.decode()))
        for run in range(args.runs):
            say(f"-- run {run + 1} of {args.runs}")
            if variants:
                name, curve, group = variants[0]
                base[name].append(_baseline_run(root, keys, curve, group, args))
                show(labels[name], base[name][-1])
            fleet_root = root / "gw-run"
            ours.append(_gateway_run(fleet_root, keys, args, say))
            shutil.rmtree(fleet_root / "gw", ignore_errors=True)
            show("EdgeFleet gateway, CURVE               ", ours[-1], "gateway")
            say(f"   gateway threads, % of a core: {ours[-1]['server_threads_cpu_percent']}")
            for name, curve, group in variants[1:]:
                base[name].append(_baseline_run(root, keys, curve, group, args))
                show(labels[name], base[name][-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def med(runs: list[dict], key: str = "records_per_s") -> float:
        return statistics.median(r[key] for r in runs) if runs else 0.0

    rps, brps, grps = med(ours), med(base.get("batch", [])), med(base.get("group", []))
    result = {
        "benchmark": "gateway_ingest",
        "records_per_s": round(rps),
        "baseline_records_per_s": round(brps),
        "ratio": round(rps / brps, 3) if brps else None,
        "baseline": "pyzmq ROUTER + CURVE/ZAP, msgpack decode, LMDB append, one fsync'd commit and one ack per batch",
        "baseline_group_commit_records_per_s": round(grps),
        "ratio_to_group_commit_baseline": round(rps / grps, 3) if grps else None,
        "baseline_no_curve_records_per_s": round(med(base.get("batch_no_curve", []))),
        "statistic": f"median of {args.runs} run(s)",
        "devices": args.devices,
        "batch": args.batch,
        "in_flight_batches": args.in_flight,
        "generator_procs": args.gen_procs,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "curve": True,
        "durable": True,
        "site_alerts": not args.no_site_alerts,  # the default rules, evaluated with the uplink down
        "gateway_cpu_percent": med(ours, "server_cpu_percent"),
        "gateway_threads_cpu_percent": ours[len(ours) // 2]["server_threads_cpu_percent"] if ours else {},
        "gateway_cpu_us_per_record": round(med(ours, "server_cpu_us_per_record"), 2),
        "baseline_cpu_us_per_record": round(med(base.get("batch", []), "server_cpu_us_per_record"), 2),
        "baseline_group_commit_cpu_us_per_record": round(med(base.get("group", []), "server_cpu_us_per_record"), 2),
        "gateway_generator_cpu_percent": med(ours, "generator_cpu_percent"),
        "error_replies": sum(r["errors"] for r in ours + [r for runs in base.values() for r in runs]),
        "acked_records_in_outbox": all(r["acked_records_in_outbox"] for r in ours),
        "runs_records_per_s": [round(r["records_per_s"]) for r in ours],
        **{f"runs_baseline_{name}_records_per_s": [round(r["records_per_s"]) for r in runs] for name, runs in base.items()},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    say(f"median: gateway {rps:,.0f} records/s, raw baseline {brps:,.0f} records/s, ratio {result['ratio']} "
        f"(group-commit baseline {grps:,.0f}, ratio {result['ratio_to_group_commit_baseline']})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

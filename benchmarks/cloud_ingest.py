"""Records/s a real cloud stores from 20 gateways (acks after commit), on SQLite and PostgreSQL, beside raw COPY.

EdgeFleet side: real ``edgefleet cloud`` processes (``simulations.fleet.ProcFleet``: CloudCore, NodeRunner,
the store thread and its IngestQueue, CurveZMQ with the ZAP allowlist). The load is ``--gateways`` simulated
gateways in this process, each a CURVE DEALER speaking the real protocol: Hello, then ForwardBatch after
ForwardBatch of ``--batch`` records (``--devices`` devices per gateway, 10 numeric metrics a record, kind
``metrics``, bulk stream), keeping ``--window`` records unacknowledged as a gateway does, moving on with
each cumulative ForwardAck (sent only once the batch is committed), and a Heartbeat after a second with nothing sent. Frames are
made with the EdgeFleet codec before the clock starts. Records acknowledged per second are counted from the
first batch sent to the last ack.

Runs, one after another on the same machine:

- ``sqlite``: one cloud on its default SQLite store (WAL, synchronous=FULL);
- ``postgres``: one cloud on a fresh PostgreSQL schema (``--pg``);
- ``postgres_2_coordinators``: two clouds on one fresh schema, the gateways split between them;
- ``baseline_copy`` (no EdgeFleet code): psycopg ``COPY`` of the same rows (the values as JSON text by orjson, as
  the store writes them) into a table of telemetry's shape (same columns, types, primary key, received_ms index,
  partitioned by day with today's partition made), one commit per batch, from one connection.

``--prefill N`` (full mode: 10,000,000) then writes N telemetry rows of other devices straight into each
store (PostgreSQL by COPY into the day partitions of the 10 days before today, SQLite by executemany; setup, not
measured; the measured records are sampled now, in today's partition) and measures ``sqlite`` and
``postgres`` again: ``*_flat`` is large over empty (target: within 20%).

The metrics follower runs in the cloud as it always does (small steps while batches wait); after the run the
time it needed to fold everything is reported (``*_follower_catch_up_s``).

Last line: one JSON object with ``sqlite_records_per_s``, ``postgres_records_per_s``,
``postgres_2_coordinators_records_per_s``, ``baseline_copy_records_per_s`` and ``ratio`` (postgres over
baseline), and more.

    .venv/bin/python benchmarks/cloud_ingest.py [--records 400000] [--gateways 20] [--prefill 10000000]
                                                [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                                [--quick] [--json-only] [--keep]
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import orjson  # noqa: E402
import psycopg  # noqa: E402
import zmq  # noqa: E402

from cloud.store.partitions import DAY_MS, partition_name  # noqa: E402
from common.keys import Allowlist, load_or_create_keypair, secure_client  # noqa: E402
from common.protocol import SUPPORTED_VERSIONS, ForwardAck, ForwardBatch, Heartbeat, Hello, HelloAck, decode, encode  # noqa: E402
from common.protocol.codec import encode_record, pack_entries  # noqa: E402
from common.protocol.messages import ForwardRecord  # noqa: E402
from simulations.fleet import ProcFleet  # noqa: E402
from simulations.teardown import exit_on_signals  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
METRICS = [f"m{i}" for i in range(10)]
PREFILL_DAYS = 10  # the prefilled rows are the 10 days before today's, as a store that ran for them holds


def gateway_records(g: int, n: int, devices: int, rng: random.Random, t0: int) -> list[tuple[str, int, int, dict]]:
    """(device, seq, ts_ms, values) of gateway ``g``: its devices in turn, each device's seq counting up, sampled a
    second apart from ``t0``."""
    out = []
    for i in range(n):
        d, seq = i % devices, i // devices + 1
        out.append((f"g{g:02d}-d{d:03d}", seq, t0 + seq * 1000 + d, {m: round(rng.uniform(0, 100), 3) for m in METRICS}))
    return out


def frames(gateway: str, records: list[tuple[str, int, int, dict]], batch: int) -> list[tuple[int, int, bytes]]:
    """(first, last, ForwardBatch blob) per batch, the outbox numbering from 1."""
    out = []
    for i in range(0, len(records), batch):
        chunk = records[i : i + batch]
        blob = pack_entries([encode_record(ForwardRecord(d, "bulk", q, t, "metrics", v)) for d, q, t, v in chunk])
        out.append((i + 1, i + len(chunk), blob))
    return out


class Gateways:
    """The simulated gateways of one run: their sockets, what they still have to send, what was acked."""

    def __init__(self, fleet: ProcFleet, clouds: list[str], names: list[str], batches: dict[str, list], window: int):
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        self.socks: dict[zmq.Socket, str] = {}
        self.batches, self.window = batches, window
        self.next = {n: 0 for n in names}  # index of the next batch to send
        self.acked = {n: 0 for n in names}  # outbox seq acknowledged
        self.records = 0
        for i, name in enumerate(names):
            cloud = clouds[i % len(clouds)]
            keys = load_or_create_keypair(fleet.dir(name))
            Allowlist(fleet.dir(cloud) / "allowed_gateways").add(keys.public, name)
            sock = self.ctx.socket(zmq.DEALER)
            sock.linger = 0
            secure_client(sock, keys, (fleet.dir(cloud) / "curve.key").read_bytes().strip())
            sock.connect(fleet.endpoints(cloud)["gateways"])
            self.socks[sock] = name
            self.poller.register(sock, zmq.POLLIN)

    def hello(self, timeout_s: float = 60.0) -> None:
        for sock, name in self.socks.items():
            sock.send(encode(Hello(name, "gateway", f"site-{name}", *SUPPORTED_VERSIONS)))
        waiting, deadline = set(self.socks), time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(waiting)} gateways had no HelloAck within {timeout_s} s")
            for sock, _ in self.poller.poll(500):
                msg = decode(sock.recv())
                if isinstance(msg, HelloAck):
                    self.window = min(self.window, msg.window)
                    waiting.discard(sock)

    def _fill(self, sock: zmq.Socket) -> None:
        name = self.socks[sock]
        todo = self.batches[name]
        while self.next[name] < len(todo):
            first, last, blob = todo[self.next[name]]
            if last - self.acked[name] > self.window:
                return
            sock.send(encode(ForwardBatch(name, f"site-{name}", "bulk", self.acked[name], first, last, blob)))
            self.sent_at[sock] = time.monotonic()
            self.next[name] += 1

    def run(self, timeout_s: float) -> float:
        """Send everything, wait for every ack; the seconds from the first send to the last ack."""
        total = sum(b[-1][1] for b in self.batches.values())
        t0 = time.monotonic()
        self.sent_at = {sock: t0 for sock in self.socks}
        for sock in self.socks:
            self._fill(sock)
        while self.records < total:
            now = time.monotonic()
            if now - t0 > timeout_s:
                raise TimeoutError(f"{self.records:,} of {total:,} records acknowledged after {timeout_s} s")
            for sock, at in self.sent_at.items():  # as a gateway does: a heartbeat after a second of silence
                if now - at > 1.0:
                    sock.send(encode(Heartbeat(int(now * 1000))))
                    self.sent_at[sock] = now
            for sock, _ in self.poller.poll(200):
                while True:
                    try:
                        msg = decode(sock.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    if isinstance(msg, ForwardAck):
                        name = self.socks[sock]
                        if msg.up_to > self.acked[name]:
                            self.records += msg.up_to - self.acked[name]
                            self.acked[name] = msg.up_to
                self._fill(sock)
        return time.monotonic() - t0

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def pg_schema(admin_url: str) -> tuple[str, str]:
    """A fresh schema on the server: (its name, the store URL searching it)."""
    schema = f"ef_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_plain(admin_url), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema, f"{admin_url}?options=-csearch_path%3D{schema}"


def drop_schema(admin_url: str, schema: str) -> None:
    with psycopg.connect(_plain(admin_url), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _json_text(values: dict) -> str:
    return orjson.dumps(values).decode()


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def baseline_copy(admin_url: str, batches: dict[str, list], gateway_rows: dict[str, list], say) -> float:
    """psycopg COPY of the same rows into a table of telemetry's shape, a commit per batch; records/s."""
    schema, _ = pg_schema(admin_url)
    try:
        with psycopg.connect(_plain(admin_url)) as conn:
            conn.execute(f"SET search_path = {schema}")
            # telemetry's shape on PostgreSQL (migrations 9-11): partitioned by day of ts_ms, the key holding it, the
            # received_ms index the leader's tail reads by; the run's rows fall in today's partition, as the cloud's
            today = int(time.time() * 1000) // DAY_MS
            for ddl in (
                'CREATE TABLE telemetry (device_id varchar(128) NOT NULL, stream varchar(16) NOT NULL, seq bigint NOT NULL,'
                ' ts_ms bigint NOT NULL, kind varchar(128) NOT NULL, "values" jsonb NOT NULL, received_ms bigint NOT NULL,'
                " ingest_id bigint, PRIMARY KEY (device_id, stream, seq, ts_ms)) PARTITION BY RANGE (ts_ms)",
                "CREATE INDEX telemetry_received ON telemetry (received_ms)",
                "CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT",
                *(f"CREATE TABLE {partition_name(d)} PARTITION OF telemetry FOR VALUES FROM ({d * DAY_MS})"
                  f" TO ({(d + 1) * DAY_MS})" for d in range(today, today + 4)),
            ):
                conn.execute(ddl)
            conn.commit()
            n, t0 = 0, time.monotonic()
            dumps = _json_text  # as the store writes them (cloud.store.bulk)
            for name, rows in gateway_rows.items():
                for first, last, _ in batches[name]:
                    now = int(time.time() * 1000)
                    with conn.cursor().copy('COPY telemetry (device_id, stream, seq, ts_ms, kind, "values", received_ms)'
                                            " FROM STDIN") as cp:
                        for d, q, t, v in rows[first - 1 : last]:
                            cp.write_row((d, "bulk", q, t, "metrics", dumps(v), now))
                    conn.commit()
                    n += last - first + 1
            return n / (time.monotonic() - t0)
    finally:
        drop_schema(admin_url, schema)


def prefill(url: str, rows: int, say) -> None:
    """``rows`` telemetry rows of 1,000 other devices written straight into the store (setup, not measured), sampled
    over the ``PREFILL_DAYS`` days before today; on PostgreSQL into those days' partitions, made as the cloud makes
    each day's ahead of it (``cloud.store.partitions``): the store a cloud that ran those days would hold."""
    devices = 1000
    t0 = time.monotonic()
    first_day = int(time.time() * 1000) // DAY_MS - PREFILL_DAYS
    step = PREFILL_DAYS * DAY_MS / max(rows, 1)
    values = json.dumps({m: 50.0 for m in METRICS})

    def gen(lo: int, hi: int):
        for i in range(lo, hi):
            ts = first_day * DAY_MS + int(i * step)
            yield (f"old-{i % devices:04d}", "bulk", i // devices + 1, ts, "metrics", values, ts, None)

    if url.startswith("sqlite:///"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.execute("INSERT INTO sites VALUES ('old', 0, 0)")
        con.execute("INSERT INTO gateways (gateway_id, site_id, first_seen_ms, last_seen_ms) VALUES ('old', 'old', 0, 0)")
        con.executemany("INSERT INTO devices (device_id, site_id, gateway_id, first_seen_ms, last_seen_ms, last_seq)"
                        " VALUES (?, 'old', 'old', 0, 0, 0)", [(f"old-{d:04d}",) for d in range(devices)])
        for lo in range(0, rows, 200_000):
            con.executemany('INSERT INTO telemetry (device_id, stream, seq, ts_ms, kind, "values", received_ms, ingest_id)'
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", gen(lo, min(rows, lo + 200_000)))
            con.commit()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the prefill's WAL written back now, not in the measured run
        con.close()
    else:
        plain, _, query = url.partition("?")
        schema = query.rsplit("%3D", 1)[1]
        with psycopg.connect(_plain(plain)) as conn:
            conn.execute(f"SET search_path = {schema}")
            for day in range(first_day, first_day + PREFILL_DAYS):
                conn.execute(f"CREATE TABLE {partition_name(day)} PARTITION OF telemetry"
                             f" FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})")
            conn.execute("INSERT INTO sites VALUES ('old', 0, 0)")
            conn.execute("INSERT INTO gateways (gateway_id, site_id, first_seen_ms, last_seen_ms) VALUES ('old', 'old', 0, 0)")
            with conn.cursor().copy("COPY devices (device_id, site_id, gateway_id, first_seen_ms, last_seen_ms, last_seq)"
                                    " FROM STDIN") as cp:
                for d in range(devices):
                    cp.write_row((f"old-{d:04d}", "old", "old", 0, 0, 0))
            for lo in range(0, rows, 200_000):
                with conn.cursor().copy('COPY telemetry (device_id, stream, seq, ts_ms, kind, "values", received_ms,'
                                        " ingest_id) FROM STDIN") as cp:
                    for row in gen(lo, min(rows, lo + 200_000)):
                        cp.write_row(row)
                conn.commit()
            conn.commit()
        # what autovacuum and the checkpointer would long have done to days-old partitions, done now, not left to
        # run (on the same 2 cores) through the measured run
        with psycopg.connect(_plain(plain), autocommit=True) as conn:
            conn.execute(f"SET search_path = {schema}")
            conn.execute("VACUUM (ANALYZE) telemetry")
            conn.execute("CHECKPOINT")
    say(f"  prefilled {rows:,} rows over the {PREFILL_DAYS} days before today in {time.monotonic() - t0:.0f} s")


def measure(args: argparse.Namespace, label: str, url: str | None, coordinators: int, say, *, prefill_rows: int = 0) -> dict:
    """One run: start ``coordinators`` clouds on ``url`` (None: SQLite in the first's data dir), load, stop."""
    root = Path(tempfile.mkdtemp(prefix=f"edgefleet-cloud-ingest-{label}-"))
    fleet = ProcFleet(root, heartbeat_s=1.0)
    gws = None
    try:
        names = [f"gw-{g:02d}" for g in range(args.gateways)]
        rng = random.Random(7)
        now = int(time.time() * 1000)  # sampled now: stored in today's partition on PostgreSQL
        rows = {n: gateway_records(g, args.records // args.gateways, args.devices, rng, now) for g, n in enumerate(names)}
        batches = {n: frames(n, rows[n], args.batch) for n in names}
        clouds = ["cloud"] + [f"cloud-{i}" for i in range(2, coordinators + 1)]
        db = ["--database", url] if url else []
        fleet.start_cloud(["--log-level", "warning", *db])
        if prefill_rows:
            fleet.stop(["cloud"])  # the schema exists now; write the old rows with the cloud stopped
            prefill(url or f"sqlite:///{fleet.dir('cloud') / 'cloud.db'}", prefill_rows, say)
            fleet.start_cloud(["--log-level", "warning", *db])
        for extra in clouds[1:]:
            _start_more(fleet, extra, db)
        if url:
            holders = {f"{socket.gethostname()}-{fleet.procs[c].popen.pid}" for c in clouds}  # coordinator ids
            _wait_for_leader(url, holders, 30.0)  # measured with the leader's work (metrics follower, tail) running
        gws = Gateways(fleet, clouds, names, batches, args.window)
        gws.hello()
        seconds = gws.run(args.max_seconds)
        rate = gws.records / seconds
        caught = _follower_catch_up(fleet, url, args.max_seconds)
        done = f"done {caught:.1f} s after the last ack" if caught is not None else f"not done {args.max_seconds:.0f} s after"
        say(f"  {label}: {gws.records:,} records in {seconds:.1f} s = {rate:,.0f} records/s; metrics follower {done}")
        return {"records_per_s": round(rate), "seconds": round(seconds, 2),
                "follower_catch_up_s": None if caught is None else round(caught, 1)}
    finally:
        if gws is not None:
            gws.close()
        fleet.kill_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _start_more(fleet: ProcFleet, name: str, db: list[str]) -> None:
    """Another coordinator on the same database: its own data dir, keys and ports."""
    load_or_create_keypair(fleet.dir(name))
    fleet._start(name, ["cloud", "--data-dir", str(fleet.dir(name)), "--bind", "tcp://127.0.0.1:*", "--api-port", "0",
                        "--heartbeat", str(fleet.heartbeat_s), "--log-level", "warning", *db])
    fleet.endpoints(name)


def _wait_for_leader(url: str, holders: set[str], timeout_s: float) -> None:
    """Until one of ``holders`` (the running clouds' coordinator ids) holds the leader lease on ``url`` (a cloud
    restarted at once may wait out a lease its predecessor took as it stopped)."""
    plain, _, query = url.partition("?")
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(_plain(plain), options=f"-csearch_path={query.rsplit('%3D', 1)[1]}", autocommit=True) as conn:
        while time.monotonic() < deadline:
            live = conn.execute("SELECT holder FROM coordinator_leases"
                                " WHERE expires_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchall()
            if any(holder in holders for (holder,) in live):
                return
            time.sleep(0.2)
    raise TimeoutError(f"no cloud held the leader lease within {timeout_s} s")


def _follower_catch_up(fleet: ProcFleet, url: str | None, timeout_s: float) -> float | None:
    """Seconds until the metric backlog is empty (the follower folded every stored row); None if not within
    ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if url is None:
            con = sqlite3.connect(f"file:{fleet.dir('cloud') / 'cloud.db'}?mode=ro", uri=True, timeout=30)
            (left,) = con.execute("SELECT count(*) FROM metric_backlog").fetchone()
            con.close()
        else:
            plain, _, query = url.partition("?")
            with psycopg.connect(_plain(plain), options=f"-csearch_path={query.rsplit('%3D', 1)[1]}") as conn:
                (left,) = conn.execute("SELECT count(*) FROM metric_backlog").fetchone()
        if left == 0:
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


def run(args: argparse.Namespace, say) -> dict:
    out: dict[str, object] = {"records": args.records, "gateways": args.gateways, "batch": args.batch,
                              "window": args.window, "prefill": args.prefill}
    say(f"{args.records:,} records from {args.gateways} gateways ({args.devices} devices each, 10 metrics a record), "
        f"{args.batch}-record batches, window {args.window}")
    if args.only == "sqlite":
        return out | {"sqlite_records_per_s": measure(args, "sqlite", None, 1, say)["records_per_s"]}
    if args.only == "postgres":
        schema, url = pg_schema(args.pg)
        try:
            return out | {"postgres_records_per_s": measure(args, "postgres", url, 1, say)["records_per_s"]}
        finally:
            drop_schema(args.pg, schema)
    sq = measure(args, "sqlite", None, 1, say)
    out |= {"sqlite_records_per_s": sq["records_per_s"], "sqlite_follower_catch_up_s": sq["follower_catch_up_s"]}
    schemas = []
    try:
        for label, n in (("postgres", 1), ("postgres_2_coordinators", 2)):
            schema, url = pg_schema(args.pg)
            schemas.append(schema)
            pg = measure(args, label, url, n, say)
            out |= {f"{label}_records_per_s": pg["records_per_s"], f"{label}_follower_catch_up_s": pg["follower_catch_up_s"]}
            # dropped now, not at the end: left behind, its tables (4M metric points a run) are autovacuum's to work
            # through while the later runs measure (postgres_large: 71,929 records/s with them beside it, 137-138k alone)
            drop_schema(args.pg, schemas.pop())
        names = [f"gw-{g:02d}" for g in range(args.gateways)]
        rng = random.Random(7)
        now = int(time.time() * 1000)
        rows = {n: gateway_records(g, args.records // args.gateways, args.devices, rng, now) for g, n in enumerate(names)}
        batches = {n: [(i + 1, min(i + args.batch, len(rows[n])), b"") for i in range(0, len(rows[n]), args.batch)]
                   for n in names}
        base = baseline_copy(args.pg, batches, rows, say)
        say(f"  baseline_copy: {base:,.0f} records/s")
        out["baseline_copy_records_per_s"] = round(base)
        out["ratio"] = round(out["postgres_records_per_s"] / base, 3)  # type: ignore[operator]
        if args.prefill:
            sq_big = measure(args, "sqlite_large", None, 1, say, prefill_rows=args.prefill)
            schema, url = pg_schema(args.pg)
            schemas.append(schema)
            pg_big = measure(args, "postgres_large", url, 1, say, prefill_rows=args.prefill)
            out |= {"sqlite_large_records_per_s": sq_big["records_per_s"], "postgres_large_records_per_s": pg_big["records_per_s"],
                    "sqlite_flat": round(sq_big["records_per_s"] / sq["records_per_s"], 3),
                    "postgres_flat": round(pg_big["records_per_s"] / out["postgres_records_per_s"], 3)}  # type: ignore[operator]
    finally:
        for schema in schemas:
            drop_schema(args.pg, schema)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400_000, help="records per run, over all gateways (default 400,000)")
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--devices", type=int, default=50, help="devices per gateway (default 50)")
    parser.add_argument("--batch", type=int, default=1000, help="records per ForwardBatch (default 1000)")
    parser.add_argument("--window", type=int, default=8000, help="records a gateway keeps unacknowledged (default 8000)")
    parser.add_argument("--prefill", type=int, default=10_000_000,
                        help="rows already stored for the large-store runs (default 10,000,000; 0: skip them)")
    parser.add_argument("--pg", default=PG, help=f"PostgreSQL server URL (default {PG}); a fresh schema per run")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="give up a run after this long")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="only this run (profiling), no baseline")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    parser.add_argument("--quick", action="store_true", help="200,000 records a run, no large-store runs (make bench)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    if args.quick:
        args.records, args.prefill, args.max_seconds = min(args.records, 200_000), 0, min(args.max_seconds, 120.0)
    exit_on_signals()  # SIGTERM/SIGINT unwind through the finally blocks, which stop every cloud

    def say(line: str) -> None:
        if not args.json_only:
            print(line, flush=True)

    out = run(args, say)
    if not args.only:
        say(f"sqlite {out['sqlite_records_per_s']:,} records/s (floor 20,000); postgres {out['postgres_records_per_s']:,} "
            f"(floor 30,000), 2 coordinators {out['postgres_2_coordinators_records_per_s']:,}; baseline COPY "
            f"{out['baseline_copy_records_per_s']:,}; ratio {out['ratio']} (floor 0.6)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

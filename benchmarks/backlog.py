"""A gateway outbox backlog written straight into LMDB, for the drain and memory benchmarks.

``prefill(data_dir, records)`` opens the gateway's outbox (``DATA_DIR/outbox``,
``common.streams.GATEWAY_POLICIES``, the gateway's own steady clock file) with
``DurableQueue`` and appends ``records`` bulk ``ForwardRecord`` entries in
chunks with ``append_many_sync``, as if ``devices`` devices had each sampled
``METRICS`` values once a second through an outage and the gateway had
accepted them all. The gateway started on that data directory afterwards sees
the backlog as its own.

Entries are the bytes ``encode_record`` makes. ``encode_record`` costs about
90 us a record here (``dataclasses.astuple`` deep-copies the values), so a
million would take a minute and a half: this module packs the same tuple with
msgpack directly and checks it against ``encode_record`` on every
thousandth record, so a change to the entry format fails loudly instead of
filling the outbox with something the gateway would not write.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from common.clock import SteadyClock
from common.durable_queue import DurableQueue
from common.protocol import ForwardRecord, encode_record
from common.streams import GATEWAY_POLICIES

__all__ = ["METRICS", "prefill"]

METRICS = ("temp_c", "humidity_pct", "pressure_hpa", "vibration_mm_s", "current_a",
           "voltage_v", "power_w", "rpm", "cpu_percent", "uptime_s")
CHUNK = 20_000  # records per append_many_sync (one LMDB transaction)


class _Device:
    """A plausible sensor: slow random walks rounded like a real driver reports them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.temp, self.hum, self.press, self.current = 20 + rng.random() * 10, 40 + rng.random() * 20, 1013.0, 5.0
        self.uptime = rng.randrange(10**6)

    def sample(self) -> dict[str, float | str]:
        r = self.rng.random
        self.temp += (r() - 0.5) * 0.1
        self.hum += (r() - 0.5) * 0.2
        self.press += (r() - 0.5) * 0.1
        self.current = max(0.1, self.current + (r() - 0.5) * 0.05)
        volts = 230 + (r() - 0.5) * 4
        self.uptime += 1
        return {
            "temp_c": round(self.temp, 2), "humidity_pct": round(self.hum, 1), "pressure_hpa": round(self.press, 2),
            "vibration_mm_s": round(1.5 + r(), 3), "current_a": round(self.current, 3), "voltage_v": round(volts, 1),
            "power_w": round(self.current * volts, 1), "rpm": 1480 + int(r() * 40), "cpu_percent": round(5 + r() * 25, 1),
            "uptime_s": self.uptime,
        }


def prefill(
    data_dir: Path, records: int, *, devices: int = 50, seed: int = 1, say: Callable[[str], None] = print
) -> dict[str, float]:
    """Append ``records`` bulk records of ``devices`` devices to the gateway outbox under ``data_dir``."""
    rng = random.Random(seed)
    fleet = [(f"dev-{i:03d}", _Device(rng)) for i in range(devices)]
    per_device = -(-records // devices)
    now_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    steady = SteadyClock(data_dir / "steady.json").start()  # the gateway resumes this clock: ages stay right
    q = DurableQueue(str(data_dir / "outbox"), streams=dict(GATEWAY_POLICIES), durable=False, clock=steady.now_ms).start()
    packb = msgpack.Packer(use_bin_type=True).pack
    written = raw_bytes = 0
    try:
        chunk: list[bytes] = []
        for k in range(records):
            seq, (device_id, dev) = k // devices + 1, fleet[k % devices]
            ts_ms = now_ms - (per_device - seq) * 1000  # one sample a second, the newest now
            values = dev.sample()
            entry = packb((device_id, "bulk", seq, ts_ms, "metrics", values))
            if k % 1000 == 0 and entry != encode_record(ForwardRecord(device_id, "bulk", seq, ts_ms, "metrics", values)):
                raise RuntimeError("outbox entries no longer match encode_record(); update benchmarks/backlog.py")
            chunk.append(entry)
            raw_bytes += len(entry)
            if len(chunk) >= CHUNK:
                q.append_many_sync(chunk, stream="bulk")
                written += len(chunk)
                chunk = []
        if chunk:
            q.append_many_sync(chunk, stream="bulk")
            written += len(chunk)
        st = q.stats("bulk")
    finally:
        q.close()
        steady.checkpoint()
    seconds = time.monotonic() - t0
    say(f"backlog: {written:,} bulk records of {devices} devices ({raw_bytes / written:.0f} B each, "
        f"{raw_bytes / 2**20:.0f} MiB) written into {data_dir / 'outbox'} in {seconds:.1f} s")
    return {"records": st.count, "bytes": st.size_bytes, "seconds": round(seconds, 1), "record_bytes": raw_bytes / written}

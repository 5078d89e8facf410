"""SIGKILL a writer process mid-stream, 20 times on one queue: every acknowledged record survives, once, in order."""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest

from common.durable_queue import DurableQueue

HELPER = Path(__file__).with_name("queue_writer_proc.py")
ROOT = Path(__file__).resolve().parents[2]
RUNS = 20


def _helper_module():  # noqa: ANN202 - a module object
    spec = importlib.util.spec_from_file_location("queue_writer_proc", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kill_mid_stream(path: str, run: int, acks_before_kill: int, stderr_file: Path) -> list[tuple[int, int, str]]:
    """Start the writer, SIGKILL it once it has printed ``acks_before_kill`` acks; return every ack it printed."""
    # the writer imports `common` from this checkout, the same code the test reads the queue with
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with stderr_file.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), path, str(run)], stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=env
        )
    assert proc.stdout is not None
    lines: list[bytes] = []
    try:
        while len(lines) < acks_before_kill:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        lines.extend(proc.stdout.readlines())  # what it printed before dying is still in the pipe
        proc.stdout.close()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"run {run}: the writer exited by itself ({proc.returncode}): {stderr_file.read_text()[-2000:]}"
    )
    assert len(lines) >= acks_before_kill, f"run {run}: writer stopped early: {stderr_file.read_text()[-2000:]}"
    acks = []
    for line in lines:
        if not line.endswith(b"\n"):  # killed in the middle of a line: that ack was not fully printed
            continue
        seq, crc, record_id = line.split()
        acks.append((int(seq), int(crc), record_id.decode()))
    return acks


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_every_acknowledged_append_survives_sigkill(tmp_path: Path) -> None:
    helper = _helper_module()
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    path = str(tmp_path / "queue")
    acked: list[tuple[int, int, str]] = []
    for run in range(RUNS):
        acks = _kill_mid_stream(path, run, rng.randint(1, 3000), tmp_path / f"stderr-{run}.txt")
        # sequences continue across runs: a new run never acknowledges a sequence at or below an older one
        if acked and acks:
            assert min(seq for seq, _, _ in acks) > max(seq for seq, _, _ in acked), f"seed {seed}, run {run}"
        acked.extend(acks)

    with DurableQueue(path) as q:
        stats = q.stats()
        stored: list[tuple[int, bytes]] = []
        while batch := q.read(after=stored[-1][0] if stored else 0, limit=10_000, max_bytes=16 << 20):
            stored.extend(batch)

    # nothing was acknowledged by the writers, so the queue holds 1..next_seq-1, strictly in order, no gaps
    assert [seq for seq, _ in stored] == list(range(1, stats.next_seq)), f"seed {seed}"
    assert stats.count == len(stored)
    assert stats.size_bytes == sum(len(p) for _, p in stored)
    # every record id was stored once (committed records never duplicated by a crash or a restart)
    ids = Counter(helper.record_id_of(p) for _, p in stored)
    assert [i for i, n in ids.items() if n > 1] == [], f"seed {seed}"
    # every acknowledged append is there, at its sequence, with its payload
    assert len({seq for seq, _, _ in acked}) == len(acked), f"seed {seed}: a sequence was acknowledged twice"
    by_seq = dict(stored)
    for seq, crc, record_id in acked:
        payload = by_seq.get(seq)
        assert payload is not None, f"seed {seed}: acknowledged record {record_id} (seq {seq}) is missing"
        assert helper.record_id_of(payload) == record_id, f"seed {seed}: seq {seq}"
        assert zlib.crc32(payload) == crc and payload == helper.payload_for(record_id), f"seed {seed}: seq {seq}"
    assert len(acked) >= RUNS  # each run acknowledged something before it was killed

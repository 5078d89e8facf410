"""Writer process for test_queue_sigkill: appends forever, printing each acknowledged record.

    python queue_writer_proc.py QUEUE_DIR RUN

Several asyncio producers keep many appends in flight through DurableQueue's
asyncio API. A line ``<seq> <crc32 of payload> <record id>`` is printed only
after the append's future has resolved, i.e. after its commit was fsync'd. Some
producers use ``append``, others ``append_many`` of three records. It never
exits on its own: the test kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import zlib
from collections import deque

from common.durable_queue import DurableQueue

PRODUCERS = 8
IN_FLIGHT = 64


def payload_for(record_id: str) -> bytes:
    """The id, then filler derived from it (so payloads differ in length and content)."""
    filler = hashlib.sha256(record_id.encode()).digest() * (1 + zlib.crc32(record_id.encode()) % 6)
    return record_id.encode() + b"|" + filler


def record_id_of(payload: bytes) -> str:
    return payload.split(b"|", 1)[0].decode()


async def _producer(q: DurableQueue, run: int, producer: int) -> None:
    window: deque[tuple[asyncio.Future[list[int]], list[tuple[str, bytes]]]] = deque()
    n = 0
    batch = 3 if producer % 2 else 1
    while True:
        if len(window) >= IN_FLIGHT:
            fut, records = window.popleft()
            for seq, (record_id, payload) in zip(await fut, records):
                print(seq, zlib.crc32(payload), record_id)
        records = []
        for _ in range(batch):
            record_id = f"{run}-{producer}-{n}"
            records.append((record_id, payload_for(record_id)))
            n += 1
        if batch == 1:
            fut = q.append(records[0][1])
        else:
            fut = q.append_many([p for _, p in records])
        window.append((fut, records))


async def main(path: str, run: int) -> None:
    q = DurableQueue(path, durable=True).start()
    await asyncio.gather(*(_producer(q, run, i) for i in range(PRODUCERS)))


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))

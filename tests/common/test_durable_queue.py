"""One contract suite for every queue implementation: DurableQueue (real LMDB) and MemoryQueue."""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.durable_queue import DurableQueue, StreamPolicy
from common.errors import QueueClosedError, QueueFullError
from common.memory_queue import MemoryQueue

Queue = DurableQueue | MemoryQueue
MakeQueue = Callable[..., Queue]


@pytest.fixture(params=["durable", "memory"])
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeQueue]:
    """Factory for started queues of one implementation; closes what it made."""
    made: list[Queue] = []

    def make(**kwargs: Any) -> Queue:
        if request.param == "durable":
            q: Queue = DurableQueue(str(tmp_path / f"q{len(made)}"), **kwargs)
        else:
            q = MemoryQueue(f"mem{len(made)}", **kwargs)
        made.append(q.start())
        return q

    yield make
    for q in made:
        q.close()


def _fill(q: Queue, n: int, size: int = 10) -> list[int]:
    return q.append_many_sync([bytes([i % 256]) * size for i in range(1, n + 1)])


def test_memory_queue_has_the_durable_queue_interface() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if callable(member) and (not name.startswith("_") or name == "__len__") and name != "__init__"
        }

    durable, memory = public(DurableQueue), public(MemoryQueue)
    assert memory.keys() == durable.keys()
    for name, sig in durable.items():
        assert list(memory[name].parameters) == list(sig.parameters), name


def test_sequences_are_consecutive_from_one(make_queue: MakeQueue) -> None:
    q = make_queue()
    assert q.stats().next_seq == 1 and q.stats().first_seq == 1 and len(q) == 0
    assert q.append_many_sync([b"a", b"bb", b"ccc"]) == [1, 2, 3]
    assert q.append_many_sync([]) == []
    assert q.append_many_sync([b"dddd"]) == [4]
    stats = q.stats()
    assert (stats.count, stats.size_bytes, stats.first_seq, stats.next_seq, stats.appended) == (4, 10, 1, 5, 4)
    assert len(q) == 4
    assert q.read() == [(1, b"a"), (2, b"bb"), (3, b"ccc"), (4, b"dddd")]


def test_read_after_and_limit(make_queue: MakeQueue) -> None:
    q = make_queue()
    _fill(q, 10)
    assert [s for s, _ in q.read()] == list(range(1, 11))
    assert [s for s, _ in q.read(after=3)] == list(range(4, 11))
    assert [s for s, _ in q.read(after=3, limit=2)] == [4, 5]
    assert [s for s, _ in q.read(after=-5, limit=1)] == [1]
    assert q.read(after=10) == []
    assert q.read(after=99) == []
    assert q.read(limit=0) == []
    assert q.read(after=6, limit=1) == [(7, bytes([7]) * 10)]


def test_read_stops_once_max_bytes_is_reached(make_queue: MakeQueue) -> None:
    q = make_queue()
    _fill(q, 10)  # 10 bytes each
    assert [s for s, _ in q.read(max_bytes=25)] == [1, 2, 3]  # 30 >= 25: the last one crosses the bound
    assert [s for s, _ in q.read(max_bytes=30)] == [1, 2, 3]
    assert [s for s, _ in q.read(max_bytes=31)] == [1, 2, 3, 4]
    assert [s for s, _ in q.read(after=8, max_bytes=1)] == [9]  # a record bigger than the bound still comes out
    assert [s for s, _ in q.read(limit=2, max_bytes=1000)] == [1, 2]


def test_ack_drops_up_to_and_sequences_are_never_reused(make_queue: MakeQueue) -> None:
    q = make_queue()
    _fill(q, 10)
    assert q.ack_sync(3) == 3
    assert [s for s, _ in q.read()] == list(range(4, 11))
    assert (q.stats().first_seq, q.stats().count, q.stats().size_bytes) == (4, 7, 70)
    assert q.ack_sync(2) == 0  # already gone
    assert q.ack_sync(3) == 0
    assert [s for s, _ in q.read(after=1, limit=2)] == [4, 5]  # `after` below the first record
    assert q.ack_sync(10) == 7  # everything, including the last record
    assert q.read() == [] and len(q) == 0
    stats = q.stats()
    assert (stats.count, stats.size_bytes, stats.first_seq, stats.next_seq) == (0, 0, 11, 11)
    assert q.ack_sync(10) == 0  # acking an empty queue
    assert q.append_many_sync([b"x", b"y"]) == [11, 12]
    assert q.ack_sync(1000) == 2  # beyond next_seq: drops what exists, reserves nothing
    assert q.append_many_sync([b"z"]) == [13]
    assert q.read() == [(13, b"z")]


def test_full_queue_refuses_then_accepts_after_ack(make_queue: MakeQueue) -> None:
    q = make_queue(max_bytes=100)
    assert q.append_many_sync([b"a" * 60]) == [1]
    with pytest.raises(QueueFullError) as info:
        q.append_many_sync([b"b" * 30, b"c" * 20])
    assert (info.value.size, info.value.incoming, info.value.limit) == (60, 50, 100)
    assert "100" in str(info.value)
    # a refused append takes nothing: no record, no sequence
    assert (len(q), q.stats().next_seq, q.stats().size_bytes) == (1, 2, 60)
    assert q.append_many_sync([b"d" * 40]) == [2]  # exactly up to the bound is fine
    with pytest.raises(QueueFullError):
        q.append_many_sync([b"e"])
    assert q.ack_sync(1) == 1
    assert q.append_many_sync([b"f" * 30, b"g" * 30]) == [3, 4]
    assert [s for s, _ in q.read()] == [2, 3, 4]
    assert q.stats().size_bytes == 100


def test_payloads_must_be_bytes_and_a_bad_one_does_not_break_the_queue(make_queue: MakeQueue) -> None:
    q = make_queue()
    with pytest.raises(TypeError):
        q.append_many_sync([b"ok", "not bytes"])  # type: ignore[list-item]
    assert q.append_many_sync([bytearray(b"ba"), memoryview(b"mv")]) == [1, 2]
    assert q.read() == [(1, b"ba"), (2, b"mv")]

    async def main() -> None:
        with pytest.raises(TypeError):
            q.append(12)  # type: ignore[arg-type]
        assert await q.append(b"after") == [3]

    asyncio.run(main())


def test_closed_queue_refuses_requests(make_queue: MakeQueue) -> None:
    q = make_queue()
    _fill(q, 2)
    q.close()
    with pytest.raises(QueueClosedError):
        q.append_many_sync([b"x"])
    with pytest.raises(QueueClosedError):
        q.ack_sync(1)
    with pytest.raises(QueueClosedError):
        q.read()
    with pytest.raises(QueueClosedError):
        q.start()

    async def main() -> None:
        with pytest.raises(QueueClosedError):
            q.append(b"x")
        with pytest.raises(QueueClosedError):
            q.append_many([b"x"])
        with pytest.raises(QueueClosedError):
            q.ack(1)

    asyncio.run(main())
    q.close()  # a second close is harmless


def test_not_started_queue_refuses_requests(tmp_path: Path) -> None:
    for q in (DurableQueue(str(tmp_path / "q")), MemoryQueue()):
        with pytest.raises(QueueClosedError):
            q.append_many_sync([b"x"])
        with pytest.raises(QueueClosedError):
            q.read()
        q.close()
    assert not (tmp_path / "q").exists()  # the constructor does no I/O


def test_async_api(make_queue: MakeQueue) -> None:
    q = make_queue(max_bytes=1000)

    async def main() -> None:
        futs = [q.append(b"%03d" % i) for i in range(100)]
        assert await asyncio.gather(*futs) == [[i] for i in range(1, 101)]
        assert await q.append_many([b"a", b"b"]) == [101, 102]
        with pytest.raises(QueueFullError):
            await q.append(b"z" * 1000)
        assert await q.ack(50) == 50
        assert await q.ack(50) == 0
        assert [s for s, _ in q.read(limit=1)] == [51]

    asyncio.run(main())


def test_an_append_is_readable_when_its_future_resolves(make_queue: MakeQueue) -> None:
    q = make_queue()
    seen: list[tuple[int, bytes]] = []

    def check(fut: asyncio.Future[list[int]]) -> None:
        (seq,) = fut.result()
        seen.extend(q.read(after=seq - 1, limit=1))

    async def main() -> None:
        futs = [q.append(b"r%d" % i) for i in range(50)]
        for fut in futs:
            fut.add_done_callback(check)
        await asyncio.gather(*futs)  # gather's own callbacks were added after ours, so ours have run

    asyncio.run(main())
    assert sorted(seen) == [(i + 1, b"r%d" % i) for i in range(50)]


def test_concurrent_producers_keep_their_order(make_queue: MakeQueue) -> None:
    q = make_queue()

    async def producer(p: int) -> list[int]:
        seqs: list[int] = []
        for chunk in range(5):
            futs = [q.append(b"%d:%d" % (p, chunk * 10 + i)) for i in range(10)]
            for fut in futs:
                seqs.extend(await fut)
        return seqs

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(producer(p) for p in range(8)))

    per_producer = asyncio.run(main())
    assert sorted(s for seqs in per_producer for s in seqs) == list(range(1, 401))
    records = dict(q.read(limit=1000))
    for p, seqs in enumerate(per_producer):
        assert seqs == sorted(seqs)
        assert [records[s] for s in seqs] == [b"%d:%d" % (p, i) for i in range(50)]


def test_cancelling_a_future_does_not_withdraw_the_append(make_queue: MakeQueue) -> None:
    q = make_queue()

    async def main() -> None:
        q.append(b"first").cancel()
        assert await q.append(b"second") == [2]

    asyncio.run(main())
    assert q.read() == [(1, b"first"), (2, b"second")]


def test_writes_made_on_one_loop_keep_their_order_across_streams_and_kinds(make_queue: MakeQueue) -> None:
    policies = {"a": StreamPolicy(1 << 20), "b": StreamPolicy(1 << 20)}
    q = make_queue(streams=policies)

    async def main() -> list[object]:
        futs = [q.append(b"a1", stream="a"), q.append(b"b1", stream="b"), q.append(b"a2", stream="a"),
                q.ack(1, stream="a"), q.append(b"a3", stream="a"), q.append_many([b"b2", b"b3"], stream="b"),
                q.append(b"b4", stream="b")]
        # a blocking call on the loop's own thread: the appends before it are handed over first, no deadlock
        sync = q.append_many_sync([b"a4"], stream="a")
        return [*(await asyncio.gather(*futs)), sync]

    assert asyncio.run(main()) == [[1], [1], [2], 1, [3], [2, 3], [4], [4]]
    assert q.read(stream="a") == [(2, b"a2"), (3, b"a3"), (4, b"a4")]
    assert q.read(stream="b") == [(1, b"b1"), (2, b"b2"), (3, b"b3"), (4, b"b4")]


def test_cancelled_futures_among_many_leave_the_others_resolved(make_queue: MakeQueue) -> None:
    q = make_queue()

    async def main() -> dict[int, object]:
        futs = [q.append(b"%d" % i) for i in range(20)]
        for fut in futs[::3]:
            fut.cancel()  # (a MemoryQueue's futures are settled already: nothing to cancel)
        return {i: await f for i, f in enumerate(futs) if not f.cancelled()}

    got = asyncio.run(main())
    assert set(range(20)) - set(got) <= set(range(0, 20, 3)) and got == {i: [i + 1] for i in got}
    assert len(q.read()) == 20  # a cancelled future does not withdraw its append


# -- DurableQueue only -------------------------------------------------------------------


def test_appends_pending_on_a_loop_when_another_thread_closes_the_queue_are_refused_not_lost(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q")).start()
    closed = threading.Event()

    async def main() -> list[object]:
        futs = [q.append(b"%d" % i) for i in range(10)]  # collected, handed over at the loop's next turn
        threading.Thread(target=lambda: (q.close(), closed.set())).start()
        await asyncio.to_thread(closed.wait, 10)
        return await asyncio.gather(*futs, return_exceptions=True)

    outcomes = asyncio.run(asyncio.wait_for(main(), 20))
    # each either committed before the close or is refused with QueueClosedError; none is left hanging
    committed = [o for o in outcomes if isinstance(o, list)]
    assert all(isinstance(o, QueueClosedError) for o in outcomes if not isinstance(o, list))
    with DurableQueue(str(tmp_path / "q")) as reopened:
        assert len(reopened) == len(committed)


def test_records_and_next_seq_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "q")
    with DurableQueue(path) as q:
        assert q.append_many_sync([b"a", b"bb", b"ccc"]) == [1, 2, 3]
        assert q.ack_sync(1) == 1
    with DurableQueue(path) as q:
        stats = q.stats()
        assert (stats.count, stats.size_bytes, stats.first_seq, stats.next_seq) == (2, 5, 2, 4)
        assert q.read() == [(2, b"bb"), (3, b"ccc")]
        assert q.ack_sync(3) == 2
    with DurableQueue(path) as q:  # fully acknowledged: the next sequence is still remembered
        stats = q.stats()
        assert (stats.count, stats.size_bytes, stats.first_seq, stats.next_seq) == (0, 0, 4, 4)
        assert q.append_many_sync([b"d"]) == [4]
    with DurableQueue(path) as q:
        assert q.read() == [(4, b"d")]


def test_async_appends_and_their_counters_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "q")
    with DurableQueue(path) as q:

        async def main() -> list[list[int]]:
            return list(await asyncio.gather(*(q.append(b"%02d" % i) for i in range(50))))

        assert asyncio.run(main()) == [[i] for i in range(1, 51)]
    with DurableQueue(path) as q:
        stats = q.stats()
        assert (stats.count, stats.size_bytes, stats.first_seq, stats.next_seq) == (50, 100, 1, 51)
        assert q.append_many_sync([b"x"]) == [51]


def test_byte_bound_counts_what_survived_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "q")
    with DurableQueue(path, max_bytes=100) as q:
        q.append_many_sync([b"a" * 80])
    with DurableQueue(path, max_bytes=100) as q:
        with pytest.raises(QueueFullError):
            q.append_many_sync([b"b" * 21])
        assert q.append_many_sync([b"b" * 20]) == [2]


def test_appends_in_flight_share_commits(tmp_path: Path) -> None:
    with DurableQueue(str(tmp_path / "q")) as q:

        async def main() -> None:
            await asyncio.gather(*(q.append(b"x") for _ in range(2000)))

        asyncio.run(main())
        stats = q.stats()
    assert stats.appended == 2000
    assert stats.commits < 200  # group commit: one fsync covers many appends


def test_requests_submitted_before_close_are_completed(tmp_path: Path) -> None:
    q = DurableQueue(str(tmp_path / "q")).start()

    async def main() -> list[list[int]]:
        futs = [q.append(b"%d" % i) for i in range(500)]
        q.close()  # blocks until the writer has finished everything submitted before
        return list(await asyncio.gather(*futs))

    assert asyncio.run(main()) == [[i] for i in range(1, 501)]
    with DurableQueue(str(tmp_path / "q")) as q:
        assert len(q) == 500


def test_durable_and_memory_queues_agree_on_random_operations(tmp_path: Path) -> None:
    """Differential: the same random mix of writes on both implementations gives the same outcomes and contents."""
    policies = {
        "critical": StreamPolicy(max_bytes=600),  # refuses when full
        "bulk": StreamPolicy(max_bytes=400, evict=True),  # evicts its oldest when full
    }

    def report(stream: str, reason: str, dropped: list[tuple[int, bytes]]) -> list[tuple[str, bytes]]:
        return [("critical", f"{stream}:{reason}:{dropped[0][0]}-{dropped[-1][0]}".encode())]

    def outcome(fut: asyncio.Future[Any]) -> Any:
        return ("error", type(fut.exception()).__name__) if fut.exception() else fut.result()

    for seed in range(5):
        rng = random.Random(seed)
        ops = []
        for _ in range(400):
            stream, kind = rng.choice(["critical", "bulk"]), rng.random()
            if kind < 0.6:
                ops.append(("append", stream, bytes([rng.randrange(256)]) * rng.randrange(0, 90)))
            elif kind < 0.8:
                ops.append(("many", stream, [b"m" * rng.randrange(0, 60) for _ in range(rng.randrange(0, 4))]))
            else:
                ops.append(("ack", stream, rng.randrange(0, 60)))
        durable = DurableQueue(str(tmp_path / f"d{seed}"), streams=policies, on_drop=report).start()
        memory = MemoryQueue("m", streams=policies, on_drop=report).start()
        try:
            results = []
            for q in (durable, memory):

                async def run(q: Queue = q) -> list[Any]:
                    futs = []
                    for i, (op, stream, arg) in enumerate(ops):
                        if op == "append":
                            futs.append(q.append(arg, stream=stream))
                        elif op == "many":
                            futs.append(q.append_many(arg, stream=stream))
                        else:
                            futs.append(q.ack(arg, stream=stream))
                        if i % 37 == 0:  # let some commits happen in between, as under real load
                            await asyncio.wait([futs[-1]])
                    await asyncio.gather(*futs, return_exceptions=True)
                    return [outcome(f) for f in futs]

                results.append(asyncio.run(run()))
            assert results[0] == results[1], f"seed {seed}"
            for reopened in (False, True):
                if reopened:  # what was committed, counters included, is what a restart finds
                    durable.close()
                    durable = DurableQueue(str(tmp_path / f"d{seed}"), streams=policies, on_drop=report).start()
                for stream in policies:
                    assert durable.read(limit=10_000, stream=stream) == memory.read(limit=10_000, stream=stream)
                    d, m = durable.stats(stream), memory.stats(stream)
                    assert (d.count, d.size_bytes, d.first_seq, d.next_seq, d.evicted) == (
                        m.count, m.size_bytes, m.first_seq, m.next_seq, m.evicted,
                    ), f"seed {seed}, stream {stream}, reopened {reopened}"
        finally:
            durable.close()
            memory.close()

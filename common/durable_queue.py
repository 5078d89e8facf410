"""The one durable queue: LMDB, one writer thread, group commit, streams with quotas and TTLs.

Used by the device agent (its local buffer) and the gateway (its outbox). A
queue holds one or more named *streams*; each stream's records get consecutive
sequence numbers starting at 1 that are never reused, even after everything is
acknowledged.

    q = DurableQueue(path, max_bytes=64 << 20).start()        # one stream, "default"
    seqs = await q.append_many([b"a", b"b"])                 # resolves once fsync'd
    for seq, payload in q.read(after=0, limit=100): ...
    await q.ack(seqs[-1])                                    # drops everything up to it
    q.close()

    q = DurableQueue(path, streams={"critical": StreamPolicy(8 << 20),
                                    "bulk": StreamPolicy(64 << 20, evict=True, ttl_ms=86_400_000)},
                     clock=steady.now_ms, on_drop=make_gap_records).start()
    await q.append_many([b"sample"], stream="bulk")

Every write goes through one writer thread. The thread takes every request
waiting at that moment and runs them in one LMDB transaction, so one fsync
covers many appends across all streams (group commit): while it is busy
committing, the next group forms. An append's future resolves only after its
transaction has committed (with ``durable=True``, after fsync). Futures of one
commit are resolved with one ``call_soon_threadsafe`` per event loop, not one
per record. If a commit fails, every request of its group fails with
``QueueError`` and the writer goes on serving the next group.

Single appends (``append``) made on one event loop are handed to the writer
together, once per turn of that loop (a ``call_soon``), as one request: the
writer stores such a run with one ``putmulti`` when it fits its stream's quota,
and the loop resolves its futures in one pass. Any other request made on that
loop (``append_many``, ``ack``, a blocking call, ``close``) hands the pending
appends over first, so requests from one loop keep their order. Nothing about
durability changes: a future still resolves only after its commit.

Each stream has a byte quota. When an append would pass it, a stream whose
policy says ``evict`` drops its oldest records first; any other stream refuses
the append with ``QueueFullError`` (backpressure). A stream with ``ttl_ms``
drops records older than that, measured on ``clock`` (give it a steady clock
that survives restarts and ignores wall-clock steps). Dropped records are
handed to ``on_drop(stream, reason, [(seq, payload)])``, which returns records
``[(stream, payload)]`` to append in the same transaction (gap reports), so a
drop is never silent and never separated from its report by a crash. Those
reports are not held to their stream's quota: they are small and must not be
lost.

One module (over the usual length) on purpose: the request tuples, the writer's
transaction and the resolution of futures are one protocol between two threads,
and its invariants (order per loop, an acknowledgement only after the commit,
a request after close refused, never dropped) are easier to check in one place.

``durable=False`` is the ``fast`` mode: commits skip fsync and the writer
flushes at most every ``fast_sync_s`` seconds; a power cut may lose up to that
window of acknowledged appends (a process crash loses nothing: the OS has the
pages).
"""
# one-piece: the request tuples, the writer thread and the loop-side batching share one protocol; apart they would hide the ordering and durability argument (see the docstring)

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from itertools import starmap
from dataclasses import dataclass
from typing import Any

import lmdb

from common.errors import QueueClosedError, QueueError, QueueFullError
from common.streams import StreamPolicy

__all__ = ["DEFAULT", "DropHook", "DurableQueue", "QueueStats", "StreamPolicy"]

DEFAULT = "default"
FORMAT = 2  # the on-disk layout: a named database per stream, values prefixed with their enqueue time

_KEY = struct.Struct(">Q")
_STAMP = struct.Struct(">Q")  # the clock reading at enqueue, in front of every stored value
_PREFIX = _STAMP.size
_RUN, _MANY, _ACK, _CLOSE, _EXPIRE = 0, 1, 2, 3, 4  # request kinds: (kind, stream, arg, future, loop or None)
# _RUN: single appends from one loop, arg a list of payloads and future the list of their futures
_MAX_GROUP = 4096  # requests taken into one transaction
# an evicting stream frees 1/EVICT_SLACK of its quota beyond what the append needs, so evictions (and
# their gap reports) come in ranges, not one record at a time
EVICT_SLACK = 64
_BYTES_LIKE = (bytes, bytearray, memoryview)

# per event loop (None: blocking callers): ([(future, result)], [(future, error)], [([future], [result])])
_Outcome = tuple[list[tuple[Any, Any]], list[tuple[Any, BaseException]], list[tuple[list[Any], list[Any]]]]
_Outcomes = dict[Any, _Outcome]
DropHook = Callable[[str, str, list[tuple[int, bytes]]], list[tuple[str, bytes]]]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A consistent snapshot of one stream's counters."""

    path: str
    count: int
    size_bytes: int  # payload bytes (each record also costs its 8-byte enqueue stamp and LMDB's own overhead)
    max_bytes: int
    first_seq: int  # lowest unacknowledged sequence (next_seq when empty)
    next_seq: int  # the sequence the next append will get
    commits: int
    appended: int
    stream: str = DEFAULT
    oldest_age_ms: int = 0  # age of the oldest record on the queue's clock (0 when empty)
    evicted: int = 0  # records dropped to make room, since the queue was created
    expired: int = 0  # records dropped by their TTL, since the queue was created


class _Stream:
    """The writer thread's working copy of one stream's counters."""

    __slots__ = ("name", "policy", "db", "next", "size", "count", "first", "first_ts", "evicted", "expired", "appended")

    def __init__(self, name: str, policy: StreamPolicy) -> None:
        self.name, self.policy, self.db = name, policy, None
        self.next, self.size, self.count, self.first, self.first_ts = 1, 0, 0, 1, 0
        self.evicted = self.expired = self.appended = 0

    def copy(self) -> _Stream:
        c = _Stream(self.name, self.policy)
        c.db = self.db
        for f in ("next", "size", "count", "first", "first_ts", "evicted", "expired", "appended"):
            setattr(c, f, getattr(self, f))
        return c


def _monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class DurableQueue:
    """Append, read a batch, acknowledge up to a sequence; bounded in bytes per stream."""

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        streams: dict[str, StreamPolicy] | None = None,
        durable: bool = True,
        fast_sync_s: float = 1.0,
        map_size: int | None = None,
        clock: Callable[[], int] = _monotonic_ms,
        on_drop: DropHook | None = None,
        expire_every_s: float = 1.0,
    ) -> None:
        self.path = str(path)
        self.policies = dict(streams) if streams else {DEFAULT: StreamPolicy(max_bytes)}
        self.max_bytes = sum(p.max_bytes for p in self.policies.values())
        self.durable = durable
        self.fast_sync_s = fast_sync_s
        self.clock = clock
        self.on_drop = on_drop
        self.expire_every_s = expire_every_s
        self._map_size = map_size or max(64 << 20, self.max_bytes * 3 + (64 << 20))
        self._requests: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._put = self._requests.put
        self._env: lmdb.Environment | None = None
        self._meta: Any = None
        self._thread: threading.Thread | None = None
        self._open = False  # accepting requests: between start() and close()
        self._closed = False
        self._writer_done = False  # the writer has exited; nothing will serve the request queue
        self._streams: dict[str, _Stream] = {}  # snapshots for readers, replaced as a whole per commit
        self._commits = 0
        # single appends not yet handed to the writer, per event loop: [stream, [payload], [future]]
        self._pending: dict[Any, list[Any]] = {}

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> DurableQueue:
        """Open (or create) the LMDB environment and start the writer thread."""
        if self._closed:
            raise QueueClosedError(f"queue {self.path!r} was closed; open a new DurableQueue")
        if self._env is not None:
            return self
        try:
            env = lmdb.open(
                self.path,
                map_size=self._map_size,
                max_dbs=len(self.policies) + 2,
                sync=self.durable,
                metasync=self.durable,
                readahead=False,
            )
            self._meta = env.open_db(b"meta")
            streams = {}
            with env.begin(write=True) as txn:
                fmt = txn.get(b"format", db=self._meta)
                if fmt is None:
                    txn.put(b"format", _KEY.pack(FORMAT), db=self._meta)
                elif _KEY.unpack(fmt)[0] != FORMAT:
                    raise QueueError(f"queue {self.path!r} has on-disk format {_KEY.unpack(fmt)[0]}, this build reads {FORMAT}")
                for name, policy in self.policies.items():
                    st = _Stream(name, policy)
                    st.db = env.open_db(f"s:{name}".encode(), txn=txn)
                    st.next = self._meta_int(txn, name, "next", 1)
                    st.size = self._meta_int(txn, name, "bytes", 0)
                    st.evicted = self._meta_int(txn, name, "evicted", 0)
                    st.expired = self._meta_int(txn, name, "expired", 0)
                    st.count = txn.stat(st.db)["entries"]
                    self._front(txn, st)
                    streams[name] = st
        except lmdb.Error as exc:
            raise QueueError(f"queue {self.path!r}: cannot open LMDB environment: {exc}") from exc
        self._env = env
        self._streams = streams
        self._thread = threading.Thread(target=self._writer, name=f"queue-writer:{self.path}", daemon=True)
        self._thread.start()
        self._open = True
        return self

    def _meta_int(self, txn: Any, stream: str, field: str, default: int) -> int:
        raw = txn.get(f"{stream}:{field}".encode(), db=self._meta)
        return _KEY.unpack(raw)[0] if raw else default

    @staticmethod
    def _front(txn: Any, st: _Stream) -> None:
        cur = txn.cursor(db=st.db)
        if cur.first():
            st.first, st.first_ts = _KEY.unpack(cur.key())[0], _STAMP.unpack_from(cur.value())[0]
        else:
            st.first, st.first_ts = st.next, 0

    def close(self) -> None:
        """Finish every request already submitted, then close the environment."""
        was_open, self._open, self._closed = self._open, False, True
        if not was_open:
            return
        # appends made before close() on this thread's loop, or on a loop that is not running (so not
        # appending), are finished; a loop running on another thread hands its own over on its next turn,
        # after the close, and they are refused
        here = asyncio._get_running_loop()
        for loop in list(self._pending):
            if loop is here or not loop.is_running():
                self._hand_over(loop)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._put((_CLOSE, None, None, done, None))
        done.result()
        assert self._thread is not None and self._env is not None
        self._thread.join()
        self._env.close()
        self._env = None

    def __enter__(self) -> DurableQueue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------

    def append(self, payload: bytes, *, stream: str = DEFAULT) -> asyncio.Future[list[int]]:
        """Append one record; the future gives ``[seq]`` once it is committed."""
        # the hot path of every producer: _checked and _submit inlined
        if type(payload) is not bytes:
            if not isinstance(payload, _BYTES_LIKE):
                raise TypeError(f"queue {self.path!r}: a payload must be bytes, not {type(payload).__name__}")
            payload = bytes(payload)
        if stream not in self.policies:
            self._stream(stream)  # raises, naming the streams there are
        if not self._open:
            raise QueueClosedError(f"queue {self.path!r} is not open")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        run = self._pending.get(loop)
        if run is None or run[0] != stream:
            run = self._new_run(loop, stream)
        run[1].append(payload)
        run[2].append(fut)
        return fut

    def _new_run(self, loop: asyncio.AbstractEventLoop, stream: str) -> list[Any]:
        """Start collecting single appends of ``loop`` to ``stream``; a run of another stream goes first."""
        if loop in self._pending:
            self._hand_over(loop)  # keeps the order of appends across streams
        else:
            loop.call_soon(self._hand_over, loop)  # once per turn of the loop
        run = self._pending[loop] = [stream, [], []]
        return run

    def _hand_over(self, loop: Any) -> None:
        """Give the writer the single appends ``loop`` has collected, as one request."""
        run = self._pending.pop(loop, None)
        if run is not None:
            self._put((_RUN, run[0], run[1], run[2], loop))
            if self._writer_done:  # close() finished meanwhile: refused, not lost silently
                self._refuse_leftovers()

    def append_many(self, payloads: Sequence[bytes], *, stream: str = DEFAULT) -> asyncio.Future[list[int]]:
        """Append records; the future gives their sequences once they are committed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._submit((_MANY, self._stream(stream), self._checked(payloads), fut, loop))
        return fut

    def ack(self, up_to: int, *, stream: str = DEFAULT) -> asyncio.Future[int]:
        """Drop every record of ``stream`` with sequence <= up_to; the future gives how many were dropped."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._submit((_ACK, self._stream(stream), int(up_to), fut, loop))
        return fut

    def append_many_sync(self, payloads: Sequence[bytes], *, stream: str = DEFAULT) -> list[int]:
        """Blocking twin for threads without an event loop (tools, tests)."""
        fut: concurrent.futures.Future[list[int]] = concurrent.futures.Future()
        self._submit((_MANY, self._stream(stream), self._checked(payloads), fut, None))
        return fut.result()

    def ack_sync(self, up_to: int, *, stream: str = DEFAULT) -> int:
        """Blocking twin of ``ack``."""
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._submit((_ACK, self._stream(stream), int(up_to), fut, None))
        return fut.result()

    def expire_sync(self) -> None:
        """Run the TTL check now (the writer also runs it every ``expire_every_s``)."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit((_EXPIRE, None, None, fut, None))
        fut.result()

    def _stream(self, name: str) -> str:
        if name not in self.policies:
            raise QueueError(f"queue {self.path!r} has no stream {name!r}; its streams are {', '.join(self.policies)}")
        return name

    def _checked(self, payloads: Sequence[bytes]) -> tuple[bytes, ...]:
        out = []
        for p in payloads:
            if type(p) is not bytes:
                if not isinstance(p, _BYTES_LIKE):
                    raise TypeError(f"queue {self.path!r}: a payload must be bytes, not {type(p).__name__}")
                p = bytes(p)
            out.append(p)
        return tuple(out)

    def _submit(self, req: tuple[Any, ...]) -> None:
        if not self._open:
            raise QueueClosedError(f"queue {self.path!r} is not open")
        if self._pending:  # single appends made earlier on this loop go first
            here = req[4] or asyncio._get_running_loop()
            if here in self._pending:
                self._hand_over(here)
        self._put(req)
        if self._writer_done:  # close() finished between the check and the put
            self._refuse_leftovers()

    def _refuse_leftovers(self) -> None:
        outcomes: _Outcomes = {}
        err = QueueClosedError(f"queue {self.path!r} was closed")
        try:
            while True:
                req = self._requests.get_nowait()
                if req[3] is None:
                    continue
                errors = outcomes.setdefault(req[4], ([], [], []))[1]
                if req[0] == _RUN:
                    errors.extend((fut, err) for fut in req[3])
                else:
                    errors.append((req[3], err))
        except queue.Empty:
            pass
        _resolve(outcomes)

    # -- reads -----------------------------------------------------------------------

    def read(
        self, after: int = 0, limit: int = 1000, max_bytes: int = 1 << 20, *, stream: str = DEFAULT
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records of ``stream`` with sequence > after, oldest first.

        Stops once the payloads total ``max_bytes`` or more, so the last record
        may cross the bound; the first record is always returned, however big.
        """
        if self._env is None:
            raise QueueClosedError(f"queue {self.path!r} is not open")
        out: list[tuple[int, bytes]] = []
        if limit < 1:
            return out
        total = 0
        unpack = _KEY.unpack
        with self._env.begin(db=self._streams[self._stream(stream)].db, buffers=False) as txn:
            cur = txn.cursor()
            if not cur.set_range(_KEY.pack(max(after + 1, 0))):
                return out
            for key, value in cur:
                out.append((unpack(key)[0], value[_PREFIX:]))
                total += len(value) - _PREFIX
                if len(out) >= limit or total >= max_bytes:
                    break
        return out

    def stats(self, stream: str = DEFAULT) -> QueueStats:
        st = self._streams[self._stream(stream)]
        age = max(0, self.clock() - st.first_ts) if st.count else 0
        return QueueStats(
            self.path, st.count, st.size, st.policy.max_bytes, st.first, st.next, self._commits, st.appended,
            st.name, age, st.evicted, st.expired,
        )

    def __len__(self) -> int:
        return sum(st.count for st in self._streams.values())

    # -- the writer thread -----------------------------------------------------------

    def _writer(self) -> None:
        get, get_nowait = self._requests.get, self._requests.get_nowait
        ttl = any(p.ttl_ms for p in self.policies.values())
        last_sync = last_expire = time.monotonic()
        closing = False
        while not closing:
            try:
                group = [get(timeout=self.expire_every_s) if ttl else get()]
            except queue.Empty:
                group = []
            try:
                while len(group) < _MAX_GROUP:
                    group.append(get_nowait())
            except queue.Empty:
                pass
            if ttl and time.monotonic() - last_expire >= self.expire_every_s:
                group.append((_EXPIRE, None, None, None, None))
                last_expire = time.monotonic()
            try:
                outcomes, closing = self._commit_group(group)
            except Exception as exc:  # noqa: BLE001 - fail this group, keep serving the next
                outcomes = _all_failed(group, QueueError(f"queue {self.path!r}: commit failed: {exc!r}"), exc)
                closing = _has_close(group)
            if not self.durable and (closing or time.monotonic() - last_sync >= self.fast_sync_s):
                self._env.sync(True)
                last_sync = time.monotonic()
            _resolve(outcomes)
        # anything submitted after close() began is refused, not lost silently
        self._writer_done = True
        self._refuse_leftovers()

    def _commit_group(self, group: list[tuple[Any, ...]]) -> tuple[_Outcomes, bool]:
        """Run a group in one transaction. Returns its outcomes and whether it holds a close request."""
        streams = {name: st.copy() for name, st in self._streams.items()}
        touched: set[str] = set()
        outcomes: _Outcomes = {}
        closing = False
        now = self.clock()
        stamp = _STAMP.pack(now)
        key = _KEY.pack
        last_loop: Any = outcomes  # a key no request has
        try:
            with self._env.begin(write=True) as txn:
                for op, name, arg, fut, loop in group:
                    if loop is not last_loop:
                        oks, errors, runs = outcomes.setdefault(loop, ([], [], []))
                        last_loop = loop
                    if op == _RUN:
                        st = streams[name]
                        touched.add(name)
                        if st.size + sum(map(len, arg)) <= st.policy.max_bytes:  # the hot path: the whole run fits
                            first = self._put_all(txn, st, arg, stamp)
                            runs.append((fut, [[seq] for seq in range(first, st.next)]))
                            continue
                        for payload, one in zip(arg, fut):  # as one append each: each may evict or be refused
                            outcome = self._append(txn, streams, st, (payload,), now, stamp, touched)
                            if isinstance(outcome, QueueFullError):
                                errors.append((one, outcome))
                            else:
                                oks.append((one, outcome))
                    elif op == _MANY:
                        outcome = self._append(txn, streams, streams[name], arg, now, stamp, touched)
                        if isinstance(outcome, QueueFullError):
                            errors.append((fut, outcome))
                        else:
                            oks.append((fut, outcome))
                    elif op == _ACK:
                        st = streams[name]
                        dropped = self._delete_front(txn, st, lambda s, v: s <= arg)
                        oks.append((fut, len(dropped)))
                        touched.add(name)
                    elif op == _EXPIRE:
                        for st in streams.values():
                            if st.policy.ttl_ms and st.count and now - st.first_ts > st.policy.ttl_ms:
                                self._drop_front(txn, streams, st, "expired", None, now, touched)
                        if fut is not None:
                            oks.append((fut, None))
                    else:
                        closing = True
                        oks.append((fut, None))
                for name in touched:
                    st = streams[name]
                    for field, value in (("next", st.next), ("bytes", st.size), ("evicted", st.evicted), ("expired", st.expired)):
                        txn.put(f"{name}:{field}".encode(), key(value), db=self._meta)
                    self._front(txn, st)
        except lmdb.MapFullError as exc:
            err: QueueError = QueueFullError(self.path, sum(s.size for s in self._streams.values()), self.max_bytes, 0)
            return _all_failed(group, err, exc), _has_close(group)
        except lmdb.Error as exc:
            err = QueueError(f"queue {self.path!r}: commit failed: {exc}")
            return _all_failed(group, err, exc), _has_close(group)
        self._streams = streams
        self._commits += 1
        return {k: v for k, v in outcomes.items() if k is not None or v != ([], [], [])}, closing

    def _append(
        self, txn: Any, streams: dict[str, _Stream], st: _Stream, payloads: Sequence[bytes], now: int, stamp: bytes,
        touched: set[str],
    ) -> list[int] | QueueFullError:
        """Append ``payloads`` to ``st`` within its quota (evicting if its policy says so): their sequences,
        or the refusal."""
        incoming = sum(map(len, payloads))
        if st.size + incoming > st.policy.max_bytes:
            if st.policy.evict and incoming <= st.policy.max_bytes:
                fit = max(0, st.policy.max_bytes - incoming - st.policy.max_bytes // EVICT_SLACK)
                self._drop_front(txn, streams, st, "evicted", fit, now, touched)
            else:
                return QueueFullError(f"{self.path}:{st.name}", st.size, st.policy.max_bytes, incoming)
        touched.add(st.name)
        first = self._put_all(txn, st, payloads, stamp)
        return list(range(first, st.next))

    def _put_all(self, txn: Any, st: _Stream, payloads: Sequence[bytes], stamp: bytes) -> int:
        """Store ``payloads`` at the end of ``st`` in one ``putmulti``; returns the first sequence."""
        first = st.next
        n = len(payloads)
        items = zip(map(_KEY.pack, range(first, first + n)), map(stamp.__add__, payloads))
        added = txn.cursor(db=st.db).putmulti(items, append=True)[1]
        if added != n:  # append=True skips a key that is not past the last one: the stored sequence is behind
            raise QueueError(f"queue {self.path!r}: stream {st.name!r} already holds sequence {first + added}")
        if st.count == 0:
            st.first_ts = _STAMP.unpack(stamp)[0]
        st.next = first + n
        st.size += sum(map(len, payloads))
        st.count += n
        st.appended += n
        return first

    @staticmethod
    def _delete_front(txn: Any, st: _Stream, drop: Callable[[int, bytes], bool]) -> list[tuple[int, bytes]]:
        """Delete records from the front while ``drop(seq, value)``; returns them (payloads without stamp)."""
        cur = txn.cursor(db=st.db)
        out: list[tuple[int, bytes]] = []
        if cur.first():
            # delete() moves to the next record; past the last one key() is b""
            while (k := cur.key()) and drop(_KEY.unpack(k)[0], v := cur.value()):
                out.append((_KEY.unpack(k)[0], v[_PREFIX:]))
                st.size -= len(v) - _PREFIX
                cur.delete()
        st.count -= len(out)
        return out

    def _drop_front(
        self, txn: Any, streams: dict[str, _Stream], st: _Stream, reason: str, fit: int | None, now: int, touched: set[str]
    ) -> None:
        """Evict (until ``st.size <= fit``) or expire (records older than the TTL), then report the drop."""
        if reason == "evicted":
            dropped = self._delete_front(txn, st, lambda s, v: st.size > fit)
            st.evicted += len(dropped)
        else:
            cutoff = now - st.policy.ttl_ms
            dropped = self._delete_front(txn, st, lambda s, v: _STAMP.unpack_from(v)[0] < cutoff)
            st.expired += len(dropped)
        touched.add(st.name)
        if dropped and self.on_drop is not None:
            stamp = _STAMP.pack(now)
            for target, payload in self.on_drop(st.name, reason, dropped):
                self._put_all(txn, streams[target], (payload,), stamp)
                touched.add(target)


def _has_close(group: list[tuple[Any, ...]]) -> bool:
    return any(req[0] == _CLOSE for req in group)


def _all_failed(group: list[tuple[Any, ...]], err: QueueError, cause: BaseException) -> _Outcomes:
    """Every request of a failed transaction fails with ``err``; a close request still completes."""
    err.__cause__ = cause
    outcomes: _Outcomes = {}
    for op, _stream, _arg, fut, loop in group:
        if fut is None:
            continue
        oks, errors, _runs = outcomes.setdefault(loop, ([], [], []))
        if op == _CLOSE:
            oks.append((fut, None))
        elif op == _RUN:
            errors.extend((one, err) for one in fut)
        else:
            errors.append((fut, err))
    return outcomes


def _resolve(outcomes: _Outcomes) -> None:
    """Complete futures: one wake-up per event loop per commit."""
    for loop, outcome in outcomes.items():
        if loop is None:
            _complete(*outcome)
            continue
        try:
            loop.call_soon_threadsafe(_complete, *outcome)
        except RuntimeError:  # the loop was closed: nobody is waiting any more
            pass


_CANCELLED = (asyncio.InvalidStateError, concurrent.futures.InvalidStateError)  # set on a future its caller cancelled
_drain = deque(maxlen=0).extend  # runs an iterator to its end in C


def _complete(
    oks: list[tuple[Any, Any]], errors: list[tuple[Any, BaseException]], runs: list[tuple[list[Any], list[Any]]]
) -> None:
    for futs, results in runs:  # a run's futures all come from one loop's create_future: one type
        pairs = zip(futs, results)
        set_result = type(futs[0]).set_result
        while True:
            try:
                _drain(starmap(set_result, pairs))
                break
            except _CANCELLED:  # that one was cancelled by its caller; the rest still get theirs
                continue
    for fut, result in oks:
        try:
            fut.set_result(result)
        except _CANCELLED:
            pass
    for fut, err in errors:
        try:
            fut.set_exception(err)
        except _CANCELLED:
            pass

"""The coordination driver of one ``edgefleet cloud`` process: the lease, the fence, wake-ups, the tail.

    coord = Coordination(store.db, "c1", on_lead=..., on_follow=..., on_wake=..., on_tail=...)
    await coord.start()
    coord.leader / coord.token        # may this coordinator run leader-only work now, under which token
    jobs = coord.fenced(store_thread) # an executor whose calls run fenced: refused once the token moved on
    coord.session_up("gw-1")          # this coordinator now holds gw-1's session (gateway_sessions)
    coord.wake("gw-1")                # a command for gw-1 was made here: wake whichever coordinator holds it
    await coord.stop()                # hand the lease over at once

On PostgreSQL every coordinator runs the lease core (``cloud.coordination.lease``) with the
claim statement on a thread of its own (never behind the store thread's backlog), listens on
``edgefleet_commands`` on a connection of its own (the wake-up; the core's command timer is the
polling fallback), and the leader reads the telemetry the other coordinators stored
(``cloud.coordination.tail``) and hands it to ``on_tail``: the batches it stored itself it notes inside
their transactions (``own_ingest``, by ``ingest_id``) and feeds to its services as it commits them
(``fed_here``, ``feed_own``: held back, per gateway, until the tail has handed out what was stored before the
term began or the gateway came here), so its tail never reads their rows; a new term forgets them (the new
tail reads back).
On SQLite there is one coordinator:
it is the leader from the start, with token 0 and no fence, and ``on_tail`` is never called
(its own batches are all there is).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloud.coordination import postgres as pg
from cloud.coordination.lease import BecameLeader, Claim, LeaseCore, LeaseSettings, Release, SteppedDown
from cloud.coordination.tail import TailCursor
from cloud.store.database import Database
from common.errors import FencedOff, StoreError

__all__ = ["Coordination"]

log = logging.getLogger("edgefleet.cloud.coordination")
TICK_S = 0.2


class Coordination:
    def __init__(
        self,
        db: Database,
        coordinator_id: str,
        *,
        settings: LeaseSettings | None = None,
        api_url: str = "",
        on_lead: Callable[[int], None] = lambda token: None,
        on_follow: Callable[[str], None] = lambda reason: None,
        on_wake: Callable[[str], None] = lambda gateway_id: None,
        on_tail: Callable[[Sequence[Mapping[str, Any]]], None] = lambda rows: None,
        on_gateways: Callable[[Sequence[Mapping[str, Any]]], None] = lambda rows: None,
        on_plans: Callable[[str], None] = lambda gateway_id: None,
        tail_s: float = 0.5,
    ) -> None:
        self.db, self.api_url = db, api_url
        self.id = coordinator_id or f"{socket.gethostname()}-{os.getpid()}"
        self.core = LeaseCore(coordinator_id, settings)
        self.multi = db.engine.dialect.name == "postgresql"
        self.on_lead, self.on_follow, self.on_wake, self.on_tail = on_lead, on_follow, on_wake, on_tail
        self.on_gateways = on_gateways  # gateways heard by any coordinator (touches, status), for the leader's alerts
        self.on_plans = on_plans  # the leader's site plans changed for a gateway whose session may be here
        self.tail_s = tail_s
        self.counters = {"terms": 0, "step_downs": 0, "claims_failed": 0, "wakes_sent": 0, "wakes_heard": 0,
                         "tailed": 0, "fenced_off": 0}
        self._single_leader = False
        self.leader_api = ""  # the leading coordinator's operator API, as its lease row names it
        self.tail_held = False  # set by on_lead while the leader restores its state: the tail waits for it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        self._tail: TailCursor | None = None
        # ingest transactions this leader stored and feeds to its services itself (the tail leaves their rows out):
        # id -> (term, wall clock ms noted, the arrival its feed waits for); a new term or a step-down forgets them
        self._own: dict[int, tuple[int, int, int]] = {}
        # gateway -> its own batches waiting for the tail to hand out earlier rows: (term, since, feed), in order
        self._held_back: dict[str, deque[tuple[int, int, Callable[[], None]]]] = {}
        self._own_lock = threading.Lock()
        self._term = 0
        self._term_start_ms = 0  # when this coordinator last became leader (wall clock, as received_ms)
        self._arrived: dict[str, int] = {}  # gateway -> when its session came here (wall clock ms)

    @property
    def leader(self) -> bool:
        return self._single_leader or self.core.leader

    @property
    def token(self) -> int:
        return self.core.token if self.core.leader else 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.multi:
            self._single_leader = True
            self.counters["terms"] += 1
            self.on_lead(0)
            return
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="coordination")
        self._tasks.append(self._loop.create_task(self._lease_loop(), name="coordination:lease"))
        self._tasks.append(self._loop.create_task(self._tail_loop(), name="coordination:tail"))
        self._listener = threading.Thread(target=self._listen, name="coordination:listen", daemon=True)
        self._listener.start()

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._thread is not None:
            for effect in self.core.release():
                await self._run_effect(effect)
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 2.0)

    # -- the lease ---------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            for effect in self.core.tick(time.monotonic()):
                await self._run_effect(effect)
            await asyncio.sleep(TICK_S)

    async def _run_effect(self, effect: object) -> None:
        match effect:
            case Claim(token):
                sent = time.monotonic()
                ttl_ms = int(self.core.settings.ttl_s * 1000)
                try:
                    granted = await self._call(lambda: self._claim(token, ttl_ms))
                except StoreError as exc:
                    self.counters["claims_failed"] += 1
                    log.warning("lease claim failed", extra={"coordinator": self.id, "error": str(exc)})
                    out = self.core.failed(str(exc), sent, time.monotonic())
                else:
                    now = time.monotonic()
                    out = self.core.granted(granted, sent, now) if granted is not None else self.core.refused(
                        "another coordinator", sent, now)
                for e in out:
                    await self._run_effect(e)
            case Release(token):
                try:
                    await self._call(lambda: self._tx("releasing the lease", lambda c: pg.release(c, self.id, token)))
                except StoreError as exc:
                    log.warning("lease release failed (it expires)", extra={"coordinator": self.id, "error": str(exc)})
            case BecameLeader(token):
                self.counters["terms"] += 1
                self._new_term()
                # a new term reads back a few takeovers: outcomes the old leader stored but never saw are heard
                back = int((self.core.settings.takeover_bound_s + 5.0) * 1000)
                self._term_start_ms = int(time.time() * 1000)
                log.info("leader", extra={"coordinator": self.id, "token": token})
                self.on_lead(token)  # first: it holds the tail while it restores, so no batch is fed itself meanwhile
                self._tail = TailCursor(int(time.time() * 1000) - back)
            case SteppedDown(token, reason):
                self.counters["step_downs"] += 1
                self._new_term()
                self._tail = None
                log.warning("stepped down", extra={"coordinator": self.id, "token": token, "reason": reason})
                self.on_follow(reason)

    def _claim(self, token: int, ttl_ms: int) -> int | None:
        def run(conn: Any) -> int | None:
            granted = pg.claim(conn, self.id, token, ttl_ms, self.api_url)
            row = pg.lease_row(conn)
            live = row is not None and row["expires_ms"] > row["now_ms"]
            self.leader_api = str(row["holder_api"]) if live and row is not None else ""
            return granted

        return self._tx("claiming the leader lease", run)

    def _tx(self, what: str, fn: Callable[[Any], Any]) -> Any:
        with self.db.transaction(what) as conn:
            return fn(conn)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        assert self._thread is not None
        return await asyncio.wrap_future(self._thread.submit(fn))

    # -- the fence ---------------------------------------------------------------------

    def fenced(self, inner: concurrent.futures.Executor) -> concurrent.futures.Executor:
        """``inner`` whose calls run under the lease token held when they were submitted."""
        return _FencedExecutor(self, inner)

    def check(self, token: int) -> Callable[[Any], None]:
        def check(conn: Any) -> None:
            try:
                if not self.multi:
                    return
                pg.check_fence(conn, self.id, token if token > 0 else -1)  # a follower never matches
            except FencedOff:
                self.counters["fenced_off"] += 1
                raise

        return check

    # -- sessions and wake-ups ---------------------------------------------------------

    def session_up(self, gateway_id: str, now_ms: int) -> None:
        """Record (on the caller's thread: the store thread) that this coordinator holds ``gateway_id``."""
        self._tx(f"recording gateway {gateway_id!r}'s session", lambda c: pg.record_session(c, gateway_id, self.id, now_ms))

    def wake(self, gateway_ids: Sequence[str], channel: str = pg.COMMANDS_CHANNEL) -> None:
        """Commands (or site plans) for these gateways were made here: wake the coordinators holding them."""
        if not self.multi or not gateway_ids:
            return
        self.counters["wakes_sent"] += len(gateway_ids)
        self._tx("waking coordinators", lambda c: pg.notify_commands(c, gateway_ids, channel))

    def _listen(self) -> None:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {pg.COMMANDS_CHANNEL}")
                    conn.execute(f"LISTEN {pg.PLANS_CHANNEL}")
                    while not self._stopping.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self.counters["wakes_heard"] += 1
                            call = self.on_plans if n.channel == pg.PLANS_CHANNEL else self.on_wake
                            if self._loop is not None and not self._loop.is_closed():
                                self._loop.call_soon_threadsafe(call, n.payload)
            except (psycopg.Error, OSError) as exc:  # reconnect; the command timer covers the gap
                log.warning("listening for wake-ups failed", extra={"coordinator": self.id, "error": str(exc)})
                self._stopping.wait(1.0)
            except RuntimeError:  # the loop closed under us: the process is stopping
                return

    # -- the leader's own batches -------------------------------------------------------

    def arrived(self, gateway_id: str, now_ms: int) -> None:
        """On the loop, at a gateway's Hello: its session is here from ``now_ms`` (its earlier batches, stored
        by another coordinator, reach the leader by the tail)."""
        self._arrived[gateway_id] = now_ms

    def own_ingest(self, ingest_id: int, gateway_ids: Sequence[str] = ()) -> None:
        """On the store thread, inside an ingest transaction: the leader, not restoring, feeds the batch to its
        services itself once committed (``fed_here``, ``feed_own``), so its tail leaves these rows out: read back,
        they cost the leader as much as storing them did. Otherwise (a follower; a leader restoring) the tail
        reads them.

        A device's records must reach the rollouts in order, and its earlier ones, stored by another coordinator
        (or here before this term), come by the tail: so ``feed_own`` holds the batch back until the tail has
        handed out every row stored before this term began and before each of these gateways came here."""
        tail = self._tail
        if not self.multi or not self.core.leader or self.tail_held or tail is None:
            return
        since = max([self._term_start_ms, *(self._arrived.get(g, 0) for g in gateway_ids)])
        noted_ms = int(time.time() * 1000)
        with self._own_lock:
            self._own[ingest_id] = (self._term, noted_ms, since)
            if len(self._own) > 256:  # only ids whose rows the tail may still read (see _forget_old_own)
                self._forget_old_own(tail)

    def _forget_old_own(self, tail: TailCursor) -> None:
        """Drop own ids the tail can never read again: their rows were stamped before ``noted_ms``, and the tail
        reads nothing stamped before ``newest - slack``; two slacks back, as the tail forgets its keys."""
        horizon = tail.newest - 2 * tail.slack_ms
        self._own = {k: v for k, v in self._own.items() if v[1] >= horizon}

    def fed_here(self, ingest_id: int | None) -> bool:
        """On the loop, after the commit: does this leader feed that transaction's batches itself (its tail not)?"""
        if not self.multi:
            return True
        with self._own_lock:
            noted = self._own.get(ingest_id) if ingest_id is not None else None
        return noted is not None and noted[0] == self._term and self.core.leader

    def feed_own(self, ingest_id: int, gateway_id: str, feed: Callable[[], None]) -> None:
        """On the loop: feed a batch of the leader's own (``fed_here``) now, or, while the tail has not yet handed
        out what was stored before the batch's term or gateway arrived (``own_ingest``), once it has; a gateway's
        batches keep their order."""
        with self._own_lock:
            noted = self._own.get(ingest_id)
        since = noted[2] if noted is not None else 0
        waiting = self._held_back.get(gateway_id)
        tail = self._tail
        if waiting is None and (not self.multi or (tail is not None and tail.handed_out_before(since))):
            feed()
            return
        self._held_back.setdefault(gateway_id, deque()).append((self._term, since, feed))

    def _feed_held_back(self) -> None:
        """On the loop, after a tail read: feed the leader's own batches whose earlier rows the tail handed out."""
        tail = self._tail
        for gateway_id in list(self._held_back):
            waiting = self._held_back[gateway_id]
            while waiting:
                term, since, feed = waiting[0]
                if term != self._term:  # a new term: the new tail reads them back
                    waiting.popleft()
                    continue
                if tail is None or not tail.handed_out_before(since):
                    break
                waiting.popleft()
                feed()
            if not waiting:
                del self._held_back[gateway_id]

    def _own_ids(self) -> list[int]:
        with self._own_lock:
            return [k for k, (term, _, _) in self._own.items() if term == self._term]

    def _new_term(self) -> None:
        with self._own_lock:
            self._term += 1
            self._own.clear()
        self._held_back.clear()  # their rows are stored: the next term's tail reads them back

    # -- the leader's tail -------------------------------------------------------------

    async def _tail_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tail_s)
            tail = self._tail
            if not self.core.leader or self.tail_held or tail is None:
                continue
            read_at = int(time.time() * 1000)
            seen_since = read_at - 2 * int(self.tail_s * 1000) - 1000
            own = self._own_ids()
            try:
                (rows, newest), gateways = await self._call(lambda: self._tx("reading stored telemetry", lambda c: (
                    pg.stored_since(c, tail.since, tail.page, own), pg.gateways_seen_since(c, seen_since))))
            except StoreError as exc:
                log.warning("the leader's tail failed", extra={"coordinator": self.id, "error": str(exc)})
                continue
            fresh = tail.take(rows, newest, read_at)
            if self._tail is tail and self.core.leader:
                if gateways:
                    self.on_gateways(gateways)
                if fresh:
                    self.counters["tailed"] += len(fresh)
                    self.on_tail(fresh)
                self._feed_held_back()


class _FencedExecutor(concurrent.futures.Executor):
    def __init__(self, coord: Coordination, inner: concurrent.futures.Executor) -> None:
        self.coord, self.inner = coord, inner

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        check = self.coord.check(self.coord.token)
        db = self.coord.db

        def fenced() -> Any:
            with db.fenced(check):
                return fn(*args, **kwargs)

        return self.inner.submit(fenced)

"""The leader's own batches on a real PostgreSQL: it notes their ingest ids inside their transactions, feeds
them itself, and its tail leaves their rows out (reading them back cost it as much as storing them); a
follower's rows, the leader's own while it restores or after a new term, and a gateway's batches until the tail
has handed out those stored before it came here, are read by the tail (a device's records arrive in order)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from cloud.coordination import postgres as pg
from cloud.coordination.lease import BecameLeader
from cloud.coordination.runtime import Coordination
from cloud.coordination.tail import TailCursor
from cloud.store import Store
from cloud.store.partitions import DAY_MS, partition_name
from common.protocol.messages import ForwardRecord
from tests.cloud.store.test_store import store_url  # noqa: F401  (a fresh PostgreSQL schema per test)

pytestmark = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


def recs(device: str, seqs: range) -> list[ForwardRecord]:
    return [ForwardRecord(device, "bulk", q, 1_000 + q, "metrics", {"t": q}) for q in seqs]


def lead(coord: Coordination, tail_at_ms: int) -> None:
    """The lease core granted a term (as the lease loop makes it); the tail has handed out rows up to
    ``tail_at_ms``."""
    coord.core.tick(0.0)  # a Claim
    [became] = coord.core.granted(1, 0.0, 0.0)
    assert isinstance(became, BecameLeader)
    coord._new_term()
    coord._tail = TailCursor(0)
    coord._tail.take([], tail_at_ms)


def test_the_tail_leaves_out_the_leaders_own_batches_and_still_moves_past_them(store_url: str) -> None:
    with Store.open(store_url) as leader_store, Store.open(store_url) as follower_store:
        coord = Coordination(leader_store.db, "c1")
        leader_store.telemetry.on_ingest_id = coord.own_ingest
        before = leader_store.telemetry.ingest("gw-1", "s", recs("early", range(1, 3)), 10)  # not leading yet
        lead(coord, 10_000)
        own = leader_store.telemetry.ingest("gw-1", "s", recs("mine", range(1, 4)), 20)
        other = follower_store.telemetry.ingest("gw-2", "s2", recs("theirs", range(1, 3)), 30)
        assert not coord.fed_here(before.ingest_id) and coord.fed_here(own.ingest_id)
        assert not coord.fed_here(other.ingest_id)  # stored by another coordinator
        with leader_store.db.transaction("tail") as conn:
            rows, newest = pg.stored_since(conn, 0, 100, coord._own_ids())
        assert sorted((r["device_id"], r["seq"]) for r in rows) == [("early", 1), ("early", 2), ("theirs", 1),
                                                                      ("theirs", 2)]
        assert newest == 30
        # a batch with a record the store refused (a device of another site) is left to the tail, which reads
        # only what was stored
        forged = leader_store.telemetry.ingest("gw-1", "s", recs("theirs", range(3, 4)) + recs("mine", range(4, 5)), 35)
        assert forged.rejected and forged.stored == 1 and not coord.fed_here(forged.ingest_id)
        coord.tail_held = True  # a new leader restoring: its batches meanwhile are read by the tail, not fed by it
        held = leader_store.telemetry.ingest("gw-1", "s", recs("held", range(1, 2)), 40)
        assert not coord.fed_here(held.ingest_id)
        coord.tail_held = False
        coord._new_term()  # stepped down or a new term: nothing is its own any more, the tail reads everything
        assert not coord.fed_here(own.ingest_id) and coord._own_ids() == []


def test_a_gateway_new_here_has_its_batches_held_back_until_the_tail_handed_out_the_earlier_rows(
        store_url: str) -> None:
    with Store.open(store_url) as store:
        coord = Coordination(store.db, "c1")
        store.telemetry.on_ingest_id = coord.own_ingest
        lead(coord, 10_000)
        coord.arrived("gw-9", 8_000)  # its batches before 8_000 were stored by another coordinator
        fed: list[str] = []
        first = store.telemetry.ingest("gw-9", "s", recs("d9", range(1, 3)), 8_100)
        with_it = store.telemetry.ingest_many([("gw-1", "s", recs("d1", range(1, 2))),
                                               ("gw-9", "s", recs("d9", range(3, 4)))], 8_200)[0]
        plain = store.telemetry.ingest("gw-2", "s", recs("d2", range(1, 2)), 8_250)
        later = store.telemetry.ingest("gw-1", "s", recs("d1", range(2, 3)), 8_300)
        assert all(coord.fed_here(r.ingest_id) for r in (first, with_it, plain, later))  # the tail reads none of them
        with store.db.transaction("tail") as conn:
            assert pg.stored_since(conn, 0, 100, coord._own_ids())[0] == []
        coord.feed_own(first.ingest_id, "gw-9", lambda: fed.append("gw-9 first"))
        coord.feed_own(with_it.ingest_id, "gw-1", lambda: fed.append("gw-1 with gw-9"))  # its transaction held gw-9's
        coord.feed_own(plain.ingest_id, "gw-2", lambda: fed.append("gw-2"))
        coord.feed_own(later.ingest_id, "gw-1", lambda: fed.append("gw-1 later"))  # behind gw-1's held batch
        assert fed == ["gw-2"]
        coord._feed_held_back()
        assert fed == ["gw-2"]  # the tail has not yet handed out what was stored up to 8_000
        coord._tail.take([], 11_001)  # it has now (its slack is 3 s)
        coord._feed_held_back()
        assert fed == ["gw-2", "gw-9 first", "gw-1 with gw-9", "gw-1 later"] and coord._held_back == {}


def test_a_new_term_drops_the_held_back_batches_for_its_tail_to_read(store_url: str) -> None:
    with Store.open(store_url) as store:
        coord = Coordination(store.db, "c1")
        store.telemetry.on_ingest_id = coord.own_ingest
        lead(coord, 10_000)
        coord.arrived("gw-9", 8_000)
        fed: list[str] = []
        held = store.telemetry.ingest("gw-9", "s", recs("d9", range(1, 2)), 8_100)
        coord.feed_own(held.ingest_id, "gw-9", lambda: fed.append("held"))
        coord._new_term()  # stepped down, or a new term: its tail reads the batch back, never fed twice
        coord._tail = TailCursor(0)
        coord._tail.take([], 20_000)
        coord._feed_held_back()
        assert fed == [] and coord._held_back == {} and not coord.fed_here(held.ingest_id)


def test_the_tail_reads_a_day_partition_never_analyzed_by_its_index(store_url: str) -> None:
    """A day's partition has no statistics until autovacuum analyzes it (its first minute): the planner's guess
    then read the whole partition every tail interval."""
    now = 1_796_601_600_000  # 2026-12-07 00:00 UTC
    with Store.open(store_url) as store:
        store.partitions.maintain(now, None, 0)
        ids = [store.telemetry.ingest("gw-1", "s", [ForwardRecord(f"d{i % 50}", "bulk", b * 1000 + i + 1, now + i,
                                                                  "metrics", {"t": 1.0}) for i in range(1000)],
                                      now + b).ingest_id for b in range(20)]
        part = partition_name(now // DAY_MS)
        store.engine.dispose()  # the ingest's sessions end, flushing their statistics (a backend keeps them a while)
        with store.engine.connect() as conn:
            scans = "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = CAST(:p AS regclass)"
            before, deadline = -1, time.monotonic() + 5.0
            while time.monotonic() < deadline:  # until the ended sessions' counts have all arrived
                conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
                now_scans = conn.execute(sa.text(scans), {"p": part}).scalar_one()
                if now_scans == before:
                    break
                before = now_scans
                time.sleep(0.3)
            conn.commit()
            rows, newest = pg.stored_since(conn, now - 3_000, 20_000, ids[:2])  # as the tail reads
            assert conn.execute(sa.text("SHOW enable_seqscan")).scalar_one() == "on"  # as it was, after
            conn.commit()
            conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
            conn.commit()  # flushed as the session goes idle
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            assert conn.execute(sa.text(scans), {"p": part}).scalar_one() == before
        assert len(rows) == 18_000 and newest == now + 19

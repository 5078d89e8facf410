"""The leader's own batches on a real PostgreSQL: it notes their ingest ids inside their transactions, feeds
them itself, and its tail leaves their rows out (reading them back cost it as much as storing them); a
follower's rows, and the leader's own while it restores or after a new term, are read by the tail."""

from __future__ import annotations

from cloud.coordination import postgres as pg
from cloud.coordination.lease import BecameLeader
from cloud.coordination.runtime import Coordination
from cloud.coordination.tail import TailCursor
from cloud.store import Store
from common.protocol.messages import ForwardRecord


def recs(device: str, seqs: range) -> list[ForwardRecord]:
    return [ForwardRecord(device, "bulk", q, 1_000 + q, "metrics", {"t": q}) for q in seqs]


def lead(coord: Coordination) -> None:
    """The lease core granted a term (as the lease loop makes it), and the tail set up."""
    coord.core.tick(0.0)  # a Claim
    [became] = coord.core.granted(1, 0.0, 0.0)
    assert isinstance(became, BecameLeader)
    coord._new_term()
    coord._tail = TailCursor(0)


def test_the_tail_leaves_out_the_leaders_own_batches_and_still_moves_past_them(pg_url: str) -> None:
    with Store.open(pg_url) as leader_store, Store.open(pg_url) as follower_store:
        coord = Coordination(leader_store.db, "c1")
        leader_store.telemetry.on_ingest_id = coord.own_ingest
        before = leader_store.telemetry.ingest("gw-1", "s", recs("early", range(1, 3)), 10)  # not leading yet
        lead(coord)
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

"""The leader lease on a real PostgreSQL: the claim, the fencing token, and two coordinator processes.

A coordinator whose lease was taken over writes nothing any more (``FencedOff`` inside its own
transaction), a takeover waits for a leader-only transaction already running, and when the leader
process is SIGKILLed the other coordinator leads within the stated bound (``ttl + retry``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.coordination import LeaseSettings, postgres as pg
from cloud.store import Store
from common.errors import FencedOff
from simulations.fleet import ProcFleet
from tests.waits import until_true


def claim(store: Store, holder: str, token: int, ttl_ms: int) -> int | None:
    with store.db.transaction("claim") as conn:
        return pg.claim(conn, holder, token, ttl_ms)


def fenced_write(store: Store, holder: str, token: int, gateway: str) -> None:
    with store.db.fenced(lambda conn: pg.check_fence(conn, holder, token)):
        with store.db.transaction("a leader-only write") as conn:
            pg.record_session(conn, gateway, holder, 1)


def sessions(store: Store) -> dict[str, str]:
    with store.db.transaction("read") as conn:
        return dict(conn.execute(sa.text("SELECT gateway_id, coordinator_id FROM gateway_sessions")).all())


def test_renewal_keeps_the_token_a_takeover_bumps_it_and_a_live_lease_is_refused(pg_url: str) -> None:
    a, b = Store.open(pg_url), Store.open(pg_url)
    try:
        assert claim(a, "a", 0, 60_000) == 1
        assert claim(a, "a", 1, 60_000) == 1  # renewed
        assert claim(b, "b", 0, 60_000) is None  # held and live
        assert claim(a, "a", 0, 60_000) is None  # a restarted "a" (token unknown) waits for expiry like anyone
        with a.db.transaction("read") as conn:
            assert pg.holder_of(conn) == "a"
            assert not pg.release(conn, "a", 7)  # not its token
            assert pg.release(conn, "a", 1)
        assert claim(b, "b", 0, 60_000) == 2  # released: taken at once, as a new term
    finally:
        a.close()
        b.close()


def test_the_old_leaders_writes_are_refused_once_another_holds_a_newer_token(pg_url: str) -> None:
    a, b = Store.open(pg_url), Store.open(pg_url)
    try:
        assert claim(a, "a", 0, -1) == 1  # granted, and already expired: "a" stalled past its lease
        fenced_write(a, "a", 1, "gw-before")  # nobody took over yet: the token is still current
        assert claim(b, "b", 0, 60_000) == 2
        with pytest.raises(FencedOff, match=r"'a' refused: it holds lease token 1, the current token is 2 "):
            fenced_write(a, "a", 1, "gw-after")
        fenced_write(b, "b", 2, "gw-new-leader")
        assert sessions(a) == {"gw-before": "a", "gw-new-leader": "b"}  # the refused write left nothing
    finally:
        a.close()
        b.close()


def test_a_takeover_waits_for_a_leader_only_transaction_in_progress(pg_url: str) -> None:
    a, b = Store.open(pg_url), Store.open(pg_url)
    try:
        assert claim(a, "a", 0, 200) == 1
        committed = threading.Event()
        taken: list[tuple[int | None, bool]] = []
        with a.db.fenced(lambda conn: pg.check_fence(conn, "a", 1)):
            with a.db.transaction("a long leader-only write") as conn:
                pg.record_session(conn, "gw", "a", 1)
                time.sleep(0.4)  # on purpose: the lease expires while the write is in progress

                def take() -> None:
                    token = claim(b, "b", 0, 60_000)
                    taken.append((token, committed.is_set()))

                t = threading.Thread(target=take)
                t.start()
                t.join(0.5)
                assert t.is_alive(), "the takeover must wait for the fenced transaction holding the token"
                committed.set()
        t.join(10)
        assert taken == [(2, True)]
    finally:
        a.close()
        b.close()


def test_sigkill_of_the_leader_process_hands_leadership_to_the_other_within_the_bound(pg_url: str, tmp_path: Path) -> None:
    settings = LeaseSettings(ttl_s=2.0)
    fleet = ProcFleet(tmp_path / "fleet")
    watch = Store.open(pg_url)

    def lease() -> dict | None:
        with watch.db.transaction("read the lease") as conn:
            row = pg.lease_row(conn)
        return row if row is not None and row["expires_ms"] > row["now_ms"] else None

    try:
        fleet.start_coordinator("cloud", pg_url, ["--lease-ttl", str(settings.ttl_s)])
        fleet.start_coordinator("cloud-2", pg_url, ["--lease-ttl", str(settings.ttl_s)])
        first = until_true(lease, "a leader")
        assert first["holder"] in ("cloud", "cloud-2")
        other = "cloud-2" if first["holder"] == "cloud" else "cloud"
        killed_at = time.monotonic()
        fleet.kill(first["holder"])
        second = until_true(lambda: (r := lease()) is not None and r["holder"] == other and r, "the other coordinator leading")
        took_s = time.monotonic() - killed_at
        assert second["token"] == first["token"] + 1
        # the bound is ttl + retry (3 s) after the last renewal, plus a claim's round trip; 1.5 s for a loaded machine
        assert took_s <= settings.takeover_bound_s + 1.5, f"takeover took {took_s:.2f} s"
        log = (fleet.root / "logs" / f"{other}.log").read_text()
        assert '"leader"' in log or "leader" in log
        print(f"takeover after SIGKILL of {first['holder']}: {took_s:.2f} s (bound {settings.takeover_bound_s} s)")
        assert fleet.stop([other]) == {other: 0}
        with watch.db.transaction("read") as conn:  # a clean stop hands the lease back at once
            assert pg.holder_of(conn) == ""
    finally:
        fleet.kill_all()
        watch.close()
        os.environ.pop("EDGEFLEET_UNUSED", None)

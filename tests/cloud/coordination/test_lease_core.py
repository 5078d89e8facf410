"""The lease core, sans-IO: when it claims, when it leads, when it steps down (time is an argument)."""

from __future__ import annotations

import pytest

from cloud.coordination import BecameLeader, Claim, LeaseCore, LeaseSettings, Release, SteppedDown, TailCursor, batches
from common.errors import ConfigError

S = LeaseSettings(ttl_s=5.0, renew_s=1.0, retry_s=1.0, margin_s=0.5)


def test_a_follower_claims_with_no_token_and_leads_when_granted() -> None:
    core = LeaseCore("c1", S)
    assert core.tick(0.0) == [Claim(0)]
    assert core.tick(0.1) == []  # one claim in flight at a time
    assert core.granted(7, sent_at=0.0, now=0.05) == [BecameLeader(7)]
    assert core.leader and core.token == 7 and core.valid_until == 4.5
    assert core.tick(0.5) == []
    assert core.tick(1.0) == [Claim(7)]  # renewals name the token held


def test_a_leader_whose_renewals_fail_stops_acting_before_the_database_could_expire_it() -> None:
    core = LeaseCore("c1", S)
    core.tick(0.0)
    core.granted(1, 0.0, 0.01)
    for t in (1.0, 2.0, 3.0, 4.0):
        assert core.tick(t) == [Claim(1)]
        assert core.failed("unreachable", t, t) == []
        assert core.leader
    assert core.tick(4.5)[0] == SteppedDown(1, "lease not renewed in time")
    assert not core.leader


def test_a_refusal_steps_a_leader_down_and_a_follower_retries_after_retry_s() -> None:
    core = LeaseCore("c1", S)
    core.tick(0.0)
    core.granted(3, 0.0, 0.0)
    core.tick(1.0)
    assert core.refused("c2", 1.0, 1.1) == [SteppedDown(3, "the lease is held by 'c2'")]
    assert core.tick(1.5) == []
    assert core.tick(2.1) == [Claim(3)]  # its last token: renewed only if nobody else took the lease meanwhile


def test_a_grant_answered_too_late_is_not_acted_on() -> None:
    core = LeaseCore("c1", S)
    core.tick(0.0)
    assert core.granted(1, sent_at=0.0, now=4.6) == []
    assert not core.leader
    assert core.tick(4.6) == [Claim(0)]


def test_a_leader_that_stepped_down_on_time_alone_leads_again_under_its_token_if_nobody_took_over() -> None:
    core = LeaseCore("c1", S)
    core.tick(0.0)
    core.granted(5, 0.0, 0.0)
    core.tick(1.0)
    core.failed("slow", 1.0, 1.0)
    core.tick(2.0)
    assert core.tick(4.5)[0] == SteppedDown(5, "lease not renewed in time")
    assert core.granted(5, sent_at=4.5, now=4.6) == [BecameLeader(5)]  # a new term: it restores from the store
    assert core.terms == 2


def test_a_new_token_on_renewal_is_a_new_term() -> None:
    core = LeaseCore("c1", S)
    core.tick(0.0)
    core.granted(1, 0.0, 0.0)
    core.tick(1.0)
    assert core.granted(2, 1.0, 1.0) == [SteppedDown(1, "lease token moved from 1 to 2"), BecameLeader(2)]
    assert core.terms == 2


def test_release_hands_the_token_back_and_a_follower_has_nothing_to_release() -> None:
    core = LeaseCore("c1", S)
    assert core.release() == []
    core.tick(0.0)
    core.granted(4, 0.0, 0.0)
    assert core.release() == [SteppedDown(4, "stopping"), Release(4)]


def test_settings_that_leave_no_time_to_renew_are_refused() -> None:
    with pytest.raises(ConfigError, match="must exceed"):
        LeaseSettings(ttl_s=1.0, renew_s=1.0)
    assert S.takeover_bound_s == 6.0


def row(device: str, seq: int, received: int, site: str = "s1", gw: str = "g1") -> dict:
    return {"device_id": device, "stream": "state", "seq": seq, "ts_ms": received, "kind": "k", "values": {"v": 1.0},
            "received_ms": received, "site_id": site, "gateway_id": gw}


def test_the_tail_hands_out_each_record_once_and_sees_a_late_commit_within_the_slack() -> None:
    tail = TailCursor(10_000, slack_ms=3000, page=100, short_ms=250, sweep_every=2)
    assert tail.since == 7000
    assert [r["seq"] for r in tail.take([row("d", 1, 10_100), row("d", 2, 10_200)])] == [1, 2]
    assert tail.since == 9950  # a short look back
    assert tail.take([]) == [] and tail.since == 7200  # every second read sweeps the whole slack
    # the next read returns both again plus one stamped earlier but committed later
    again = [row("d", 3, 10_150), row("d", 1, 10_100), row("d", 2, 10_200)]
    assert [r["seq"] for r in tail.take(again)] == [3]
    assert tail.taken == 3


def test_a_full_page_is_followed_from_its_last_arrival() -> None:
    tail = TailCursor(0, slack_ms=3000, page=2)
    tail.take([row("d", 1, 5), row("d", 2, 6)])
    assert tail.since == 6
    tail.take([row("d", 2, 6), row("d", 3, 7)])
    assert tail.since == 7


def test_the_newest_arrival_of_rows_left_out_moves_the_cursor_on() -> None:
    tail = TailCursor(10_000, slack_ms=3000, page=100, short_ms=250, sweep_every=8)
    assert tail.take([], 12_000) == [] and tail.since == 11_750  # the leader's own rows up to 12_000: not read again
    assert tail.take([], None) == [] and tail.since == 11_750


def test_rows_before_a_time_are_handed_out_once_the_newest_or_a_whole_read_is_a_slack_past_it() -> None:
    tail = TailCursor(10_000, slack_ms=3000, page=2)
    assert not tail.handed_out_before(8_000)  # a read must pass 8_000 by the slack: a late commit may still come
    tail.take([row("d", 1, 10_500)], None, read_at_ms=10_900)
    assert not tail.handed_out_before(8_000)
    tail.take([], None, read_at_ms=11_100)  # a quiet fleet: a whole read that began a slack after 8_000 covers it
    assert tail.handed_out_before(8_000) and not tail.handed_out_before(8_100)
    tail.take([row("d", 2, 20_000), row("d", 3, 20_001)], None, read_at_ms=30_000)  # a full page covers no time
    assert tail.covered == 11_100 and tail.handed_out_before(17_000)  # but its rows' arrivals do


def test_batches_group_tailed_rows_by_site_and_gateway() -> None:
    out = batches([row("a", 1, 1), row("b", 1, 2, site="s2", gw="g2"), row("a", 2, 3)])
    assert sorted(out) == [("s1", "g1"), ("s2", "g2")]
    assert [r.seq for r in out[("s1", "g1")]] == [1, 2] and out[("s1", "g1")][0].values == {"v": 1.0}

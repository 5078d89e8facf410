"""The sans-IO download core: credit window, per-chunk checks, resume, cuts, backoff, pacing."""

from __future__ import annotations

import hashlib
import random

import pytest

from common.errors import TransferError
from common.shaping import TokenBucket
from common.transfer.download import Download, Plan, Verdict

CHUNK = 1000


def artifact(n_chunks: int, seed: int = 1) -> tuple[bytes, Plan]:
    data = random.Random(seed).randbytes(n_chunks * CHUNK - 123)
    chunks = tuple(hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK))
    return data, Plan(hashlib.sha256(data).hexdigest(), len(data), CHUNK, chunks)


def chunk(data: bytes, i: int) -> bytes:
    return data[i * CHUNK:(i + 1) * CHUNK]


class Link:
    """A server that answers each request in order; ``cut()`` loses everything in flight."""

    def __init__(self, data: bytes) -> None:
        self.data, self.wire, self.sent = data, [], 0

    def send(self, requests) -> None:
        self.wire += [r.index for r in requests]

    def deliver_one(self, dl: Download, now: float) -> None:
        i = self.wire.pop(0)
        self.sent += 1
        if dl.received(i, chunk(self.data, i), now) is Verdict.STORE:
            dl.stored(i)
        self.send(dl.pump(now))

    def cut(self) -> None:
        self.wire.clear()


def test_every_chunk_once_and_never_more_than_the_window_in_flight():
    data, plan = artifact(40)
    dl = Download(plan, window=4)
    link = Link(data)
    link.send(dl.pump(0.0))
    while link.wire:
        assert len(dl.in_flight) <= 4
        link.deliver_one(dl, 0.0)
    assert dl.done and link.sent == 40 and dl.resent == 0


@pytest.mark.parametrize("seed", range(5))
def test_a_download_cut_ten_times_at_random_points_resends_at_most_one_chunk_per_cut(seed):
    rng = random.Random(seed)
    data, plan = artifact(60, seed)
    dl = Download(plan, window=1)
    link = Link(data)
    link.send(dl.pump(0.0))
    cuts = sorted(rng.sample(range(1, 55), 10))
    delivered = 0
    while not dl.done:
        if cuts and delivered == cuts[0]:
            cuts.pop(0)
            link.cut()
            link.send(dl.link_up(0.0))
        link.deliver_one(dl, 0.0)
        delivered += 1
    assert dl.resent <= 10
    assert link.sent <= 60 + 10


def test_resume_never_asks_for_what_is_already_held():
    data, plan = artifact(10)
    dl = Download(plan, have={0, 1, 2, 7}, window=8)
    asked = {r.index for r in dl.pump(0.0)}
    assert asked == {3, 4, 5, 6, 8, 9}


def test_a_tampered_chunk_is_rejected_reported_and_asked_again_only_after_a_backoff():
    data, plan = artifact(3)
    dl = Download(plan, window=1, rng=random.Random(1))
    (req,) = dl.pump(0.0)
    bad = bytearray(chunk(data, req.index))
    bad[10] ^= 0xFF
    assert dl.received(req.index, bytes(bad), 0.0) is Verdict.BAD
    assert dl.failures == [(0, "SHA-256 does not match")] and dl.bad_chunks == 1
    (other,) = dl.pump(0.1)  # the window moves on to the next chunk...
    assert other.index == 1
    assert dl.received(1, chunk(data, 1), 0.1) is Verdict.STORE
    dl.stored(1)
    assert [r.index for r in dl.pump(0.2)] == [2]  # ...but the bad one waits out its backoff: no tight loop
    assert dl.received(2, chunk(data, 2), 0.2) is Verdict.STORE
    dl.stored(2)
    wake = dl.wake_at()
    assert wake is not None and wake >= 0.5
    assert dl.tick(wake - 0.01) == []
    assert 0 in [r.index for r in dl.tick(wake)] and dl.resent == 1
    assert dl.received(0, chunk(data, 0), wake) is Verdict.STORE


def test_repeated_failures_back_off_longer_and_then_give_up_with_a_typed_error():
    data, plan = artifact(2)
    dl = Download(plan, window=1, max_failures=4, rng=random.Random(2))
    now, waits = 0.0, []
    with pytest.raises(TransferError, match="chunk 0 failed 4 times"):
        for _ in range(10):
            reqs = dl.tick(now)
            for r in reqs:
                dl.received(r.index, b"garbage", now)
            wake = dl.wake_at()
            waits.append(wake - now)
            now = wake
    assert waits[1] > waits[0] * 1.2  # the backoff grows


def test_a_chunk_nobody_asked_for_is_dropped():
    data, plan = artifact(3)
    dl = Download(plan, window=1)
    dl.pump(0.0)
    assert dl.received(2, chunk(data, 2), 0.0) is Verdict.STALE
    assert dl.duplicates == 1


def test_an_unanswered_request_is_asked_again_after_its_timeout():
    data, plan = artifact(2)
    dl = Download(plan, window=1, timeout_s=5.0)
    (req,) = dl.pump(0.0)
    assert dl.tick(4.9) == []
    (again,) = dl.tick(5.0)
    assert again.index == req.index and dl.resent == 1


def test_the_bandwidth_limit_paces_requests():
    data, plan = artifact(20)
    dl = Download(plan, window=20, bucket=TokenBucket(2 * CHUNK, CHUNK, now=0.0))
    assert len(dl.pump(0.0)) == 1  # the bucket holds one chunk
    assert dl.wake_at() == pytest.approx(0.5)
    assert len(dl.tick(0.5)) == 1


def test_a_plan_whose_hashes_do_not_cover_the_size_is_refused():
    with pytest.raises(TransferError, match="chunk hashes"):
        Plan("ab" * 32, 3000, 1000, ("x", "y"))

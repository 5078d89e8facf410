"""The leader lease, sans-IO: who may run the work that must run once, and with which fencing token.

Coordinators (``edgefleet cloud`` processes over one PostgreSQL) compete for one row of
``coordinator_leases``. The core decides *when* to ask the database and *what an answer
means*; the driver (``cloud.coordination.runtime``) runs the one statement
(``cloud.coordination.postgres.claim``) and feeds the answer back::

    core = LeaseCore("c1", LeaseSettings(ttl_s=5.0))
    for effect in core.tick(now):         # Claim(token): run the claim statement
        ...
    core.granted(token, sent_at, now)     # -> [BecameLeader(token)] the first time
    core.refused(holder, sent_at, now)    # -> [SteppedDown(token, why)] if it was leader
    core.failed(why, sent_at, now)        # the database did not answer: the leader keeps acting until its
                                          # lease could have expired, then steps down (tick)

The rules:

- The database grants the lease for ``ttl_s`` from the moment it runs the claim (its clock,
  never a coordinator's). The core counts the lease from when it *sent* the claim, which is
  earlier, and stops acting ``margin_s`` before that: a leader never acts on a lease the
  database may already consider expired.
- A claim that keeps the token it names renews the lease; any other grant bumps the token by
  one (a new term). Every leader-only write checks the token in its own transaction
  (``postgres.check_fence``), so the writes of a leader that stalled past its lease are refused
  (``FencedOff``) once another coordinator holds a newer token.
- A follower claims every ``retry_s``; a leader renews every ``renew_s``. After the leader
  dies, another coordinator leads within ``takeover_bound_s = ttl_s + retry_s`` (plus one
  statement's round trip).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError

__all__ = ["BecameLeader", "Claim", "LeaseCore", "LeaseSettings", "Release", "SteppedDown"]


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    ttl_s: float = 5.0  # how long one grant lasts (database clock)
    renew_s: float = 1.0  # a leader renews this often
    retry_s: float = 1.0  # a follower claims this often
    margin_s: float = 0.5  # a leader stops acting this long before its lease could expire

    def __post_init__(self) -> None:
        if self.renew_s <= 0 or self.retry_s <= 0:
            raise ConfigError("lease renew_s and retry_s must be positive")
        if not 0 <= self.margin_s < self.ttl_s - self.renew_s:
            raise ConfigError(f"lease ttl_s {self.ttl_s} must exceed renew_s {self.renew_s} + margin_s {self.margin_s}: "
                              "a leader must get to renew before it stops acting")

    @property
    def takeover_bound_s(self) -> float:
        """After the leader dies, another coordinator leads within this (plus one statement's round trip)."""
        return self.ttl_s + self.retry_s


@dataclass(frozen=True, slots=True)
class Claim:
    """Run the claim statement: renew if ``token`` is still current, else take an expired lease (new token)."""

    token: int  # the token this coordinator holds or last held; 0: none


@dataclass(frozen=True, slots=True)
class Release:
    """Give the lease up now (expire it) if ``token`` is still current: a clean stop hands over at once."""

    token: int


@dataclass(frozen=True, slots=True)
class BecameLeader:
    token: int


@dataclass(frozen=True, slots=True)
class SteppedDown:
    token: int
    reason: str


class LeaseCore:
    """One coordinator's view of the lease: ``follower`` or ``leader`` with ``token``."""

    def __init__(self, holder: str, settings: LeaseSettings | None = None) -> None:
        self.holder = holder
        self.settings = settings or LeaseSettings()
        self.leader = False
        self.token = 0
        self.valid_until = 0.0  # a leader acts until then (local clock)
        self.in_flight = False
        self.next_at = 0.0
        self.terms = 0  # times this coordinator became leader

    def tick(self, now: float) -> list[object]:
        """Step down if the lease could have expired; claim when one is due and none is in flight."""
        out: list[object] = []
        if self.leader and now >= self.valid_until:
            out.append(self._step_down("lease not renewed in time"))
        if not self.in_flight and now >= self.next_at:
            # the last token held, also after stepping down: if nobody took the lease meanwhile, it is renewed
            # under the same token (no other leader wrote in between) and this coordinator leads again at once
            self.in_flight = True
            out.append(Claim(self.token))
        return out

    def granted(self, token: int, sent_at: float, now: float) -> list[object]:
        """The claim sent at ``sent_at`` was granted with ``token``."""
        self.in_flight = False
        valid_until = sent_at + self.settings.ttl_s - self.settings.margin_s
        out: list[object] = []
        if self.leader and token != self.token:  # a new term (ours lapsed in between): start again from the store
            out.append(self._step_down(f"lease token moved from {self.token} to {token}"))
        if valid_until <= now:  # the answer came too late to act on
            self.next_at = now
            if self.leader:
                out.append(self._step_down("the renewal answered after the lease could have expired"))
            return out
        self.valid_until = valid_until
        self.next_at = sent_at + self.settings.renew_s
        if not self.leader:
            self.leader, self.token = True, token
            self.terms += 1
            out.append(BecameLeader(token))
        return out

    def refused(self, holder: str, sent_at: float, now: float) -> list[object]:
        """Another coordinator (``holder``) holds an unexpired lease."""
        self.in_flight = False
        self.next_at = now + self.settings.retry_s
        return [self._step_down(f"the lease is held by {holder!r}")] if self.leader else []

    def failed(self, why: str, sent_at: float, now: float) -> list[object]:
        """The claim did not run (database unreachable, timeout): try again soon; ``tick`` steps down in time."""
        self.in_flight = False
        self.next_at = now + min(self.settings.retry_s, self.settings.renew_s)
        return []

    def release(self) -> list[object]:
        """Stopping: step down and give the lease up."""
        if not self.leader:
            return []
        token = self.token
        return [self._step_down("stopping"), Release(token)]

    def _step_down(self, reason: str) -> SteppedDown:
        self.leader = False
        self.valid_until = 0.0
        return SteppedDown(self.token, reason)

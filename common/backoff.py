"""Exponential reconnect backoff with "equal jitter"; pure: no clock, no global RNG.

The un-jittered base grows ``initial_s, initial_s * multiplier, ...`` up to ``max_s``.
Each delay is drawn uniformly from ``[base / 2, base]`` ("equal jitter"): half the
base is kept so a delay is never close to zero (a fleet that lost its gateway does
not hammer it the moment it returns), the other half is random so clients that
disconnected together spread out instead of reconnecting in lockstep. "Full
jitter" (``[0, base]``) spreads a little wider but can return ~0, which is why it is
not used here.

The caller owns the ``random.Random`` (seed it in tests and simulations) and the
sleeping: ``next_delay()`` only says how long to wait.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays between reconnect attempts; ``reset()`` once a connection succeeds."""

    def __init__(
        self,
        *,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        multiplier: float = 2.0,
        rng: random.Random,
    ) -> None:
        if not initial_s > 0:
            raise ValueError(f"backoff initial_s must be > 0, got {initial_s!r}")
        if not max_s >= initial_s:
            raise ValueError(f"backoff max_s must be >= initial_s ({initial_s!r}), got {max_s!r}")
        if not multiplier >= 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {multiplier!r}")
        self.initial_s = float(initial_s)
        self.max_s = float(max_s)
        self.multiplier = float(multiplier)
        self.rng = rng
        self.attempts = 0
        self._base = self.initial_s

    @property
    def base_s(self) -> float:
        """The un-jittered base of the next delay."""
        return self._base

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt, in ``[base / 2, base]``; then grow the base."""
        base = self._base
        delay = base / 2 + self.rng.uniform(0.0, base / 2)
        self._base = min(self.max_s, base * self.multiplier)  # capped each step: never overflows
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a successful connection)."""
        self._base = self.initial_s
        self.attempts = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(initial_s={self.initial_s}, max_s={self.max_s}, multiplier={self.multiplier}, "
            f"attempts={self.attempts}, base_s={self._base})"
        )

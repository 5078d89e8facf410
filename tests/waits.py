"""How the tests wait: for a signal, with a hang guard, never against a tight wall-clock budget.

A test that waits for something checks its condition each time the thing it waits on says it moved (a
scheduler job finished, a process printed a line, a webhook arrived) and never sleeps a fixed time
hoping it is enough. What bounds a wait is only a **hang guard**: one generous limit, the same for every
wait, so a broken build fails with what it was waiting for instead of hanging, and a loaded machine (two
cores shared by several test runs) does not fail a test that is merely slow.

    await until_signalled(lambda: store.count() == 2, "both devices stored", signal=job_done)
    status = until_true(lambda: api_get("/v1/sites/site-1"), "the gateway's status")   # real processes

``until_true`` is for state kept by real OS processes that cannot notify the test (a cloud's HTTP API, an
LMDB file another process writes): it polls, and only the hang guard bounds it. A test that needs time to
pass on purpose (an outage kept up while a quota fills) measures it with ``time.monotonic()`` and says so.

``EDGEFLEET_TEST_HANG_GUARD_S`` sets the guard (default 240 s, under pytest-timeout's 300 s per test).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["HANG_GUARD_S", "until_signalled", "until_true"]

T = TypeVar("T")

HANG_GUARD_S = float(os.environ.get("EDGEFLEET_TEST_HANG_GUARD_S", "240"))


def _hung(what: str, guard_s: float, last: object) -> AssertionError:
    return AssertionError(f"still waiting for {what} after {guard_s:g} s (hang guard; last seen: {last!r})")


async def until_signalled(predicate: Callable[[], T], what: str, *, signal: asyncio.Event,
                          guard_s: float = HANG_GUARD_S) -> T:
    """Check ``predicate`` now and after each time ``signal`` is set (it is cleared before each check);
    return its first true value. Fails only when nothing made it true within the hang guard."""
    deadline = time.monotonic() + guard_s
    while True:
        signal.clear()
        if value := predicate():
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _hung(what, guard_s, value)
        try:
            await asyncio.wait_for(signal.wait(), remaining)
        except TimeoutError:
            if value := predicate():
                return value
            raise _hung(what, guard_s, value) from None


def until_true(predicate: Callable[[], T], what: str, *, every_s: float = 0.1, guard_s: float = HANG_GUARD_S,
               tolerate: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``predicate`` (state held by real processes, which cannot notify the test) every ``every_s``;
    return its first true value. An exception in ``tolerate`` counts as "not yet" (a cloud restarting refuses
    connections). Fails only when it stayed false for the whole hang guard."""
    deadline = time.monotonic() + guard_s
    while True:
        try:
            value = predicate()
        except tolerate as exc:
            value = exc  # type: ignore[assignment]
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            raise _hung(what, guard_s, value)
        time.sleep(every_s)

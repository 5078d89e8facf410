"""The metrics follower's pacing (``cloud.metrics_follower``): while batches keep coming, small steps and at most a
quarter of the store thread; once they stop, big steps back to back until it has caught up."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from cloud.metrics_follower import FOLLOW_BUSY_ROWS, FOLLOW_ROWS, MetricsFollower


def run_follower(busy: bool, seconds: float = 0.6, step_s: float = 0.02,
                 interval_s: float = 0.001) -> list[tuple[int, float, float]]:
    """(rows asked, start, end) of each step over ``seconds``; ``busy``: ingest writes move before every step."""
    steps: list[tuple[int, float, float]] = []
    writes = iter(range(10**6))

    def step(rows: int) -> int:
        start = time.monotonic()
        time.sleep(step_s)
        steps.append((rows, start, time.monotonic()))
        return rows  # a full step: there is more to fold

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            follower = MetricsFollower(step, pool, (lambda: next(writes)) if busy else (lambda: 0),
                                       interval_s=interval_s, running=lambda: True)
            follower.start()
            await asyncio.sleep(seconds)
            follower.stop()

    asyncio.run(main())
    return steps


def share(steps: list[tuple[int, float, float]]) -> float:
    """The thread's time spent folding, from the first step's start to the last's end."""
    return sum(end - start for _, start, end in steps) / (steps[-1][2] - steps[0][1])


def test_while_batches_come_it_takes_small_steps_and_at_most_a_quarter_of_the_store_thread() -> None:
    steps = run_follower(busy=True)
    assert {r for r, _, _ in steps[1:]} == {FOLLOW_BUSY_ROWS}
    assert len(steps) >= 5 and share(steps[1:]) <= 0.3  # (the step's time sets the pause, not interval_s)


def test_once_batches_stop_it_folds_big_steps_back_to_back() -> None:
    steps = run_follower(busy=False, seconds=0.8, step_s=0.05, interval_s=0.25)
    assert {r for r, _, _ in steps} == {FOLLOW_ROWS}
    assert share(steps) >= 0.6  # only the loop's turn between steps (waiting interval_s would give 0.17)

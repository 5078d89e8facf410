"""SteadyClock: ages that survive restarts and ignore wall-clock steps."""

import pytest

from common.clock import SteadyClock
from common.errors import ConfigError


class Fake:
    def __init__(self):
        self.mono, self.wall = 100.0, 1_700_000_000.0


def clock(tmp_path, f):
    return SteadyClock(tmp_path / "steady.json", monotonic=lambda: f.mono, wall=lambda: f.wall).start()


def test_advances_with_monotonic_time_not_wall_steps(tmp_path):
    f = Fake()
    c = clock(tmp_path, f)
    f.mono += 5
    f.wall -= 3600  # the wall clock is stepped back an hour
    assert c.now_ms() == 5000
    f.mono += 1
    f.wall += 7200
    assert c.now_ms() == 6000


def test_resumes_after_restart_adding_downtime(tmp_path):
    f = Fake()
    c = clock(tmp_path, f)
    f.mono += 10
    f.wall += 10
    c.checkpoint()
    f.wall += 50  # the process is down for 50 s; monotonic restarts from anything
    f.mono = 3.0
    c2 = clock(tmp_path, f)
    assert c2.now_ms() == 60_000 and c2.downtime_ms == 50_000


def test_wall_clock_gone_backwards_across_a_restart_counts_zero_downtime(tmp_path):
    f = Fake()
    c = clock(tmp_path, f)
    f.mono += 10
    c.checkpoint()
    f.wall -= 86_400  # RTC reset on the way down
    c2 = clock(tmp_path, f)
    assert c2.now_ms() == 10_000 and c2.downtime_ms == 0


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "steady.json").write_text("{not json")
    with pytest.raises(ConfigError, match="steady clock file"):
        clock(tmp_path, Fake())

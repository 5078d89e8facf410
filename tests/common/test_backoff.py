from __future__ import annotations

import random
import statistics

import pytest

import common.backoff
from common.backoff import Backoff


def make(seed: int = 1, **kw: float) -> Backoff:
    params = {"initial_s": 0.5, "max_s": 30.0, "multiplier": 2.0, **kw}
    return Backoff(**params, rng=random.Random(seed))


def test_all() -> None:
    assert common.backoff.__all__ == ["Backoff"]


def test_each_delay_is_within_half_base_and_base() -> None:
    for seed in range(50):
        b = make(seed)
        for _ in range(20):
            base = b.base_s
            delay = b.next_delay()
            assert base / 2 <= delay <= base


def test_base_grows_geometrically_to_the_cap_and_stays() -> None:
    b = make(initial_s=0.5, max_s=30.0, multiplier=2.0)
    bases = []
    for _ in range(12):
        bases.append(b.base_s)
        b.next_delay()
    assert bases == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    assert b.attempts == 12


def test_delays_at_the_cap_never_exceed_it_and_never_approach_zero() -> None:
    b = make(initial_s=1.0, max_s=10.0, multiplier=3.0)
    delays = [b.next_delay() for _ in range(1000)]
    assert max(delays) <= 10.0
    assert min(delays[5:]) >= 5.0
    assert min(delays) >= 0.5


def test_many_attempts_do_not_overflow() -> None:
    b = make(initial_s=0.1, max_s=60.0, multiplier=10.0)
    for _ in range(10_000):
        assert 30.0 <= b.next_delay() <= 60.0 or b.attempts < 5


def test_multiplier_one_is_a_constant_window() -> None:
    b = make(initial_s=2.0, max_s=2.0, multiplier=1.0)
    assert all(1.0 <= b.next_delay() <= 2.0 for _ in range(100))


def test_reset_starts_again_from_initial() -> None:
    b = make()
    for _ in range(8):
        b.next_delay()
    assert b.base_s == 30.0
    b.reset()
    assert b.base_s == 0.5
    assert b.attempts == 0
    assert 0.25 <= b.next_delay() <= 0.5
    assert b.base_s == 1.0


def test_same_seed_same_delays() -> None:
    a, b = make(seed=42), make(seed=42)
    assert [a.next_delay() for _ in range(30)] == [b.next_delay() for _ in range(30)]
    assert [make(seed=43).next_delay() for _ in range(3)] != [make(seed=42).next_delay() for _ in range(3)]


def test_uses_only_the_rng_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> float:
        raise AssertionError("the global RNG was used")

    for name in ("random", "uniform", "expovariate", "randint", "randrange"):
        monkeypatch.setattr(random, name, forbidden)
    expected = [make(seed=7).next_delay()]
    random.seed(0)  # reseeding the global RNG changes nothing
    assert [make(seed=7).next_delay()] == expected


def test_first_delays_of_a_fleet_spread_over_the_window() -> None:
    # 200 clients lose the same gateway at the same instant; their first retries must not cluster
    initial = 4.0
    delays = [make(seed=client, initial_s=initial).next_delay() for client in range(200)]
    low, high = initial / 2, initial
    assert all(low <= d <= high for d in delays)
    bins = [0] * 10
    for d in delays:
        bins[min(9, int((d - low) / (high - low) * 10))] += 1
    assert min(bins) >= 8, bins  # uniform expects 20 a bin
    assert max(bins) <= 35, bins
    assert max(delays) - min(delays) > 0.9 * (high - low)
    assert statistics.pstdev(delays) > 0.2 * (high - low)  # uniform: (high - low) / sqrt(12) ~ 0.29
    assert len(set(delays)) == 200


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"initial_s": 0.0}, "initial_s must be > 0"),
        ({"initial_s": -1.0}, "initial_s must be > 0"),
        ({"initial_s": 5.0, "max_s": 1.0}, "max_s must be >= initial_s"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"initial_s": float("nan")}, "initial_s must be > 0"),
    ],
)
def test_invalid_parameters(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(**kw)


def test_rng_is_required_and_keyword_only() -> None:
    with pytest.raises(TypeError):
        Backoff(initial_s=1.0, max_s=2.0, multiplier=2.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Backoff(1.0, 2.0, 2.0, random.Random(1))  # type: ignore[misc]

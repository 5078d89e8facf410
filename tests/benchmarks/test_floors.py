"""make bench's table of floors: every benchmark it names exists and has a quick mode; floors are judged right."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
_spec = importlib.util.spec_from_file_location("bench_runner", BENCH / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_runner"] = bench  # its dataclass looks itself up there
_spec.loader.exec_module(bench)
FLOORS = tomllib.loads((BENCH / "floors.toml").read_text())


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_every_benchmark_in_the_floors_exists_and_takes_its_quick_arguments(name: str) -> None:
    spec = FLOORS[name]
    assert (BENCH / f"{name}.py").exists()
    assert "--quick" in spec["args"] and spec["timeout_s"] > 0 and spec["floors"]
    for fl in spec["floors"]:
        assert fl["op"] in bench.OPS and isinstance(fl["value"], (int, float)) and fl["metric"] and fl["source"]
    helped = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and all(a in helped.stdout for a in spec["args"]), helped.stdout + helped.stderr


def test_a_floor_is_met_or_not_whichever_way_it_points() -> None:
    assert bench.check(0.40, ">=", 0.35) == (True, 1.143)
    assert bench.check(0.30, ">=", 0.35) == (False, 0.857)
    assert bench.check(1.03, "<=", 1.05) == (True, 1.019)
    assert bench.check(41.0, "<", 40) == (False, 0.976)
    assert bench.check(None, ">=", 1) == (False, None)  # a missing metric fails
    assert bench.check(True, "<=", 1) == (False, None)  # so does a flag where a number belongs

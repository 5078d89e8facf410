"""``make bench``: every benchmark in its quick mode, one table of metric, floor, measured and ratio.

Reads ``benchmarks/floors.toml``, runs each script listed there (``--quick --json-only``) as a child in
its own process group, takes the JSON object it prints last, and checks each floor. A script that runs
past its ``timeout_s`` is sent SIGTERM (the benchmarks stop everything they started, see
``simulations/teardown.py``), then SIGKILL 30 s later, and counts as failed ("timeout"); so does one that
exits non-zero or prints no JSON. Prints the table, then the JSON of the whole run as the last line.
Exit status 1 if any floor is not met, 0 if all are.

``ratio`` is measured over the floor for ``>=`` / ``>`` and the floor over measured for ``<=`` / ``<``:
at least 1.0 means met, whichever way the floor points. ``load`` is the 1-minute load average when the
script started. Not part of CI: timings on shared runners are noisy (docs/BENCHMARKS.md says how to read
each run).

    .venv/bin/python benchmarks/bench.py [--only NAME ...] [--floors FILE]
"""

from __future__ import annotations

import os
import sys

# this directory holds queue.py, which would shadow the standard library's queue: put the repository first
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import operator  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from simulations.teardown import exit_on_signals  # noqa: E402

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
GRACE_S = 30.0  # after SIGTERM, before SIGKILL


@dataclass
class Row:
    benchmark: str
    metric: str
    floor: str
    measured: float | None
    ratio: float | None
    ok: bool
    note: str = ""
    load: float | None = None
    seconds: float | None = None


def check(measured: object, op: str, value: float) -> tuple[bool, float | None]:
    """Whether ``measured op value`` holds, and the ratio (>= 1.0 when met)."""
    if not isinstance(measured, (int, float)) or isinstance(measured, bool):
        return False, None
    if op in (">=", ">"):
        ratio = measured / value if value else None
    else:
        ratio = value / measured if measured else float("inf")
    return OPS[op](measured, value), (round(ratio, 3) if ratio is not None else None)


def run_script(name: str, args: list[str], timeout_s: float) -> tuple[dict | None, str, float]:
    """Run benchmarks/NAME.py; returns (its last JSON object or None, what went wrong, seconds)."""
    script = Path(_HERE) / f"{name}.py"
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        problem = "" if proc.returncode == 0 else f"exit {proc.returncode}: {_tail(err or out)}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script tears down what it started
        try:
            out, err = proc.communicate(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        problem = f"timeout: stopped after {timeout_s:.0f} s"
    except BaseException:  # make bench itself was stopped: stop the script too
        _stop_group(proc)
        raise
    seconds = time.monotonic() - t0
    for line in reversed((out or "").strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc, problem, seconds
    return None, problem or f"no JSON line in its output: {_tail(err or out)}", seconds


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _tail(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def _number(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.5g}"


def table(rows: list[Row]) -> str:
    head = ("benchmark", "metric", "floor", "measured", "ratio", "", "load", "s")
    body = [
        (r.benchmark, r.metric, r.floor, _number(r.measured),
         "-" if r.ratio is None else f"{r.ratio:.3f}", "ok" if r.ok else f"FAIL {r.note[:70]}".strip(),
         "-" if r.load is None else f"{r.load:.1f}", "-" if r.seconds is None else f"{r.seconds:.0f}")
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    widths[5] = 4  # the verdict runs to the end of its line
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only this benchmark (repeatable)")
    parser.add_argument("--floors", default=os.path.join(_HERE, "floors.toml"), help="the floors file")
    args = parser.parse_args(argv)
    exit_on_signals()
    with open(args.floors, "rb") as f:
        spec = tomllib.load(f)
    unknown = [n for n in args.only if n not in spec]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)} in {args.floors}; there are {', '.join(spec)}")
    rows: list[Row] = []
    for name, bench in spec.items():
        if args.only and name not in args.only:
            continue
        load = round(os.getloadavg()[0], 2)
        print(f"== {name} {' '.join(bench['args'])} (load {load}, up to {bench['timeout_s']} s)", flush=True)
        doc, problem, seconds = run_script(name, list(bench["args"]), float(bench["timeout_s"]))
        for fl in bench["floors"]:
            floor = f"{fl['op']} {fl['value']:g}"
            measured = (doc or {}).get(fl["metric"])
            ok, ratio = check(measured, fl["op"], fl["value"])
            note = problem if problem else ("" if ok else ("missing" if measured is None else "below floor"))
            rows.append(Row(name, fl["metric"], floor, measured if isinstance(measured, (int, float)) else None,
                            ratio, ok and not problem, note, load, round(seconds, 1)))
            print(f"   {fl['metric']} {floor}: {measured} -> {'ok' if ok and not problem else 'FAIL ' + note}", flush=True)
    print()
    print(table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} floors met" + (
        f"; not met: {', '.join(f'{r.benchmark}.{r.metric}' for r in failed)}" if failed else ""))
    print(json.dumps({"benchmark": "bench", "ok": not failed, "rows": [asdict(r) for r in rows]}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

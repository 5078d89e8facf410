"""Resident memory and idle CPU of a real ``edgefleet agent`` process, and the size of a device's install.

Starts a cloud, a gateway and one agent as separate processes on 127.0.0.1
(``simulations.fleet.ProcFleet``), waits until the cloud has stored the agent's
telemetry (so it is connected and in its steady state: sampling every
``--sample-interval`` s, heartbeats every second), then watches the agent's
process for ``--seconds``: RSS (and USS, the memory only it holds) every 0.5 s,
and its CPU time over the whole window. Targets: under 40 MB RSS and under 1%
of one core.

The agent runs with a real-board profile (``--board grub``, the default: a board
in a directory, ``simulations.board_dir``, whose real grubenv it marks good at
start) or on the simulated board (``--board sim``).

``install_mb`` is what ``pip install edgefleet`` puts on a device: the files of
every distribution in the closure of the project's base dependencies (read from
their installed RECORDs; edgefleet's own packages counted from the source tree),
``install_full_mb`` the same with the ``cloud`` extra, for comparison (the
baseline, in the same run). No network is used.

Progress goes to stdout; the last line is one JSON object with ``rss_mb`` (the
largest RSS seen), ``idle_cpu_percent`` and ``install_mb``.

    .venv/bin/python benchmarks/agent_footprint.py [--seconds 10] [--board grub|uboot|sim] [--json-only]
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import re  # noqa: E402
from importlib.metadata import PackageNotFoundError, distribution  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402

from simulations.fleet import ProcFleet  # noqa: E402
from simulations.teardown import exit_on_signals  # noqa: E402

MB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "device_agent", "gateway", "cloud", "simulations")  # what the edgefleet wheel holds


def closure(name: str, extras: tuple[str, ...] = ()) -> dict[str, object]:
    """Installed distributions ``pip install name[extras]`` needs: normalised name -> Distribution."""
    found: dict[str, object] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(name, extras)]
    while todo:
        dist_name, want = todo.pop()
        key = re.sub(r"[-_.]+", "-", dist_name).lower()
        if (key, ",".join(sorted(want))) in seen:
            continue
        seen.add((key, ",".join(sorted(want))))
        try:
            dist = distribution(dist_name)
        except PackageNotFoundError:
            continue
        found[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *want)):
                todo.append((req.name, tuple(req.extras)))
    return found


def install_bytes(dists: dict[str, object]) -> dict[str, int]:
    """Bytes on disk per distribution (edgefleet's own: its packages' files in this tree)."""
    sizes: dict[str, int] = {}
    for key, dist in dists.items():
        if key == "edgefleet":
            files = [f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*") if f.is_file()]
            sizes[key] = sum(f.stat().st_size for f in files)
            continue
        total = 0
        for f in dist.files or []:  # type: ignore[attr-defined]
            try:
                total += Path(f.locate()).stat().st_size
            except OSError:
                pass
        sizes[key] = total
    return sizes


def install_size() -> dict[str, object]:
    device = install_bytes(closure("edgefleet"))
    full = install_bytes(closure("edgefleet", ("cloud",)))
    return {
        "install_mb": round(sum(device.values()) / MB, 1),
        "install_full_mb": round(sum(full.values()) / MB, 1),
        "install_packages": sorted(device),
        "install_largest": {k: round(v / MB, 1) for k, v in sorted(device.items(), key=lambda kv: -kv[1])[:4]},
    }


def measure(seconds: float, sample_interval: float, say, board: str = "grub") -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="edgefleet-footprint-"))
    fleet = ProcFleet(root, heartbeat_s=1.0, sample_interval_s=sample_interval)
    try:
        fleet.start_cloud()
        fleet.start_gateway("gw-1", "site-1")
        flags: list[str] = []
        if board != "sim":
            from simulations.board_dir import DirBoard, make_rootfs

            flags = DirBoard.create(root / "board", board, make_rootfs(root / "factory.img", "1.0.0")).agent_flags()
        agent = fleet.start_agent("dev-1", "site-1", "gw-1", extra=flags)
        assert agent.popen is not None
        proc = psutil.Process(agent.popen.pid)
        deadline = time.monotonic() + 30
        while True:  # connected: the cloud holds some of its records
            summary = fleet.api("/v1/telemetry/summary")
            if summary.get("distinct", 0) > 0:  # type: ignore[union-attr]
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agent's telemetry did not reach the cloud within 30 s; see {root / 'logs'}")
            time.sleep(0.2)
        say(f"agent pid {proc.pid} connected; watching it for {seconds:g} s")
        time.sleep(1.0)  # let the first batches settle
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        rss, uss = [], []
        while time.monotonic() - t0 < seconds:
            mem = proc.memory_full_info()
            rss.append(mem.rss)
            uss.append(mem.uss)
            time.sleep(0.5)
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        return {
            "rss_mb": round(max(rss) / MB, 1),
            "uss_mb": round(max(uss) / MB, 1),
            "idle_cpu_percent": round(100.0 * busy / (t1 - t0), 2),
            "seconds": round(t1 - t0, 1),
            "sample_interval_s": sample_interval,
            "threads": proc.num_threads(),
            "board": board,
            "python": sys.version.split()[0],
        }
    finally:
        fleet.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to watch the agent (default 10)")
    parser.add_argument("--sample-interval", type=float, default=1.0, help="agent's telemetry interval (default 1 s)")
    parser.add_argument("--quick", action="store_true", help="watch 5 s (make bench)")
    parser.add_argument("--board", choices=("grub", "grub-emu", "uboot", "sim"), default="grub",
                        help="the agent's board profile (default grub: a board in a directory, real grubenv)")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
    exit_on_signals()  # SIGTERM/SIGINT unwind to measure()'s finally, which stops the fleet

    def say(line: str) -> None:
        if not args.json_only:
            print(line, flush=True)

    out = measure(args.seconds, args.sample_interval, say, args.board)
    say(f"agent ({args.board} board): RSS {out['rss_mb']} MB (USS {out['uss_mb']} MB), CPU {out['idle_cpu_percent']}% "
        f"of a core over {out['seconds']} s (targets: < 40 MB, < 1%)")
    out |= install_size()
    say(f"device install (pip install edgefleet): {out['install_mb']} MB in {len(out['install_packages'])} "
        f"distributions (largest {out['install_largest']}); with the cloud extra: {out['install_full_mb']} MB")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

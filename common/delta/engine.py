"""Make a delta by trying several methods within a time and memory budget; apply one, streaming.

``make_delta`` plans first (pure: ``plan_candidates``), then runs each planned
candidate, by default in its own child process so that a candidate over its
time budget is killed and its peak memory is measured. It keeps the smallest
patch, unless even that is not clearly smaller than the zstd-compressed full
image, in which case it raises ``DeltaNotWorthIt`` (its ``result`` has the
numbers) and writes no patch.

Candidates, each a patch format (``_format.METHOD_CODES``):

- ``bsdiff4-blocks``: bsdiff4 over changed non-fill blocks (``_blocks``);
  against the whole old image when its suffix sort fits the memory budget
  (``window="whole"``), else against local windows (``window="local"``),
  which is fast and small in memory on any image size;
- ``bsdiff4``: plain BSDIFF40, only for small images (RAM, quadratic on zero runs);
- ``zstd-patch-from``: zstd with the old image as a dictionary, window
  covering old + new, at the strongest settings a quarter of the budget allows
  (``/ultra``: level 22 with long-distance matching, two frames tried;
  ``/ultra-stream``: one; ``/19``: level 19).

A patch in a format of ours (``bsdiff4-blocks``) is written in the compact
container (``_format``); one in another tool's format is written bare, exactly
as that tool would (a zstd frame, a BSDIFF40 file), so the engine's output is
never larger than its best candidate's bare output.

Applying is ``common.delta.apply``.
"""
# one-piece: the candidate race (run, time budget, pick the smallest, bare or framed) is one decision read top to bottom

from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.delta import _blocks, _methods
from common.delta._format import BLOCKS, BSDIFF4, ZSTD, PatchHeader, file_digest
from common.errors import DeltaError, DeltaNotWorthIt

__all__ = [
    "DEFAULT_METHODS",
    "Attempt",
    "Candidate",
    "DeltaResult",
    "make_delta",
    "make_delta_in_pool",
    "peak_rss_bytes",
    "plan_candidates",
]

MiB = 1 << 20
DEFAULT_METHODS = (BLOCKS, ZSTD, BSDIFF4)
PLAIN_BSDIFF_LIMIT = 16 * MiB  # plain bsdiff4 only up to here: RAM ~19x, quadratic on zero runs
WORTH_RATIO = 0.8  # a delta must be at most this fraction of the compressed full image

# Rates measured on the project's 2-vCPU machines (ANCHORS.md, benchmarks/delta_size.py), rounded up.
_S_PER_MIB = {"blocks-whole": 0.9, "blocks-local": 0.15, BSDIFF4: 0.8, ZSTD: 1.0, "zstd-22": 1.3}  # zstd: per frame
ULTRA_LIMIT = 64 * MiB  # level 22 only up to here: its tables and time grow with the window
_FULL_S_PER_MIB = {19: 0.35, 12: 0.03}
_BASE_RSS = 64 * MiB  # an interpreter with bsdiff4 and zstandard loaded


@dataclass(frozen=True, slots=True)
class Candidate:
    """One planned attempt: a method, its settings, and what it is expected to cost."""

    method: str
    label: str
    params: dict[str, Any]
    est_bytes: int
    est_seconds: float
    skip: str | None = None  # why it will not run, or None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one candidate did."""

    label: str
    method: str
    patch_size: int | None
    seconds: float
    peak_rss_bytes: int | None
    note: str = ""  # "" when it made a patch; otherwise why not


@dataclass(frozen=True, slots=True)
class DeltaResult:
    method: str
    patch_size: int
    old_size: int
    new_size: int
    full_size: int  # the new image compressed with zstd at full_level
    full_level: int
    seconds: float
    peak_rss_bytes: int | None  # the largest of the candidates' peaks (children), None in-process
    old_sha256: str
    new_sha256: str
    attempts: tuple[Attempt, ...] = field(default=())
    container_bytes: int = 0  # the patch's header in EdgeFleet's container; 0 when written bare

    @property
    def ratio(self) -> float:
        """Patch size over compressed full size (lower is better)."""
        return self.patch_size / self.full_size if self.full_size else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 4)
        d["attempts"] = [asdict(a) for a in self.attempts]
        return d


def plan_candidates(
    old_size: int,
    new_size: int,
    *,
    time_budget_s: float,
    memory_budget_bytes: int,
    methods: Sequence[str] = DEFAULT_METHODS,
    blocks_window: str = "auto",
) -> list[Candidate]:
    """The attempts ``make_delta`` will make, in order, with the ones it will skip and why. No I/O.

    ``blocks_window``: ``"auto"`` bsdiff's the changed blocks against the whole
    old image when that fits the budgets (smallest patches), else against local
    windows; ``"whole"`` or ``"local"`` force one.
    """
    if blocks_window not in ("auto", "whole", "local"):
        raise ValueError(f"blocks_window must be auto, whole or local, not {blocks_window!r}")
    big = max(old_size, new_size)
    mib = big / MiB
    out: list[Candidate] = []
    for method in methods:
        if method == BLOCKS:
            whole_bytes = _blocks.blocks_memory_estimate(old_size, new_size, whole=True) + _BASE_RSS
            whole_s = _S_PER_MIB["blocks-whole"] * mib
            fits = whole_bytes <= memory_budget_bytes and whole_s <= time_budget_s / 2
            if blocks_window == "whole" or (blocks_window == "auto" and fits):
                skip = _over(whole_bytes, whole_s, memory_budget_bytes, time_budget_s)
                out.append(Candidate(BLOCKS, "bsdiff4-blocks/whole", {"whole_limit": old_size}, whole_bytes, whole_s, skip))
            else:
                out.append(_local_candidate(old_size, new_size, memory_budget_bytes, time_budget_s))
        elif method == BSDIFF4:
            est_bytes = _blocks.BSDIFF_RAM_FACTOR * big + old_size + new_size + _BASE_RSS
            est_s = _S_PER_MIB[BSDIFF4] * mib
            skip = (
                f"images over {PLAIN_BSDIFF_LIMIT // MiB} MiB (RAM ~19x, quadratic on zero runs)"
                if big > PLAIN_BSDIFF_LIMIT
                else _over(est_bytes, est_s, memory_budget_bytes, time_budget_s)
            )
            out.append(Candidate(BSDIFF4, BSDIFF4, {}, est_bytes, est_s, skip))
        elif method == ZSTD:
            out.append(_zstd_candidate(old_size, new_size, memory_budget_bytes, time_budget_s))
        else:
            raise ValueError(f"unknown delta method {method!r}; known: {', '.join(DEFAULT_METHODS)}")
    return out


def _local_candidate(old_size: int, new_size: int, memory_budget_bytes: int, time_budget_s: float) -> Candidate:
    est_bytes = _blocks.blocks_memory_estimate(old_size, new_size, whole=False) + _BASE_RSS
    est_s = _S_PER_MIB["blocks-local"] * max(old_size, new_size) / MiB
    skip = _over(est_bytes, est_s, memory_budget_bytes, time_budget_s)
    return Candidate(BLOCKS, "bsdiff4-blocks/local", {"whole_limit": -1}, est_bytes, est_s, skip)


def _zstd_candidate(old_size: int, new_size: int, memory_budget_bytes: int, time_budget_s: float) -> Candidate:
    """The strongest zstd settings whose estimate fits a quarter of the time budget (the other candidates
    share it) and the memory budget; else level 19, skipped if even that does not fit."""
    for settings, (level, _ldm, frames) in _methods.ZSTD_SETTINGS.items():
        ultra = level > _methods.ZSTD_LEVEL
        est_bytes = 2 * (old_size + new_size) + (768 if ultra else 128) * MiB + _BASE_RSS
        est_s = _S_PER_MIB["zstd-22" if ultra else ZSTD] * len(frames) * new_size / MiB
        if ultra and (new_size > ULTRA_LIMIT or est_s > time_budget_s / 4 or est_bytes > memory_budget_bytes):
            continue
        skip = _over(est_bytes, est_s, memory_budget_bytes, time_budget_s)
        return Candidate(ZSTD, f"{ZSTD}/{settings}", {"settings": settings}, est_bytes, est_s, skip)
    raise AssertionError("ZSTD_SETTINGS ends with a setting that always applies")


def _over(est_bytes: int, est_s: float, mem: int, budget_s: float) -> str | None:
    if est_bytes > mem:
        return f"needs ~{est_bytes // MiB} MiB, over the memory budget of {mem // MiB} MiB"
    if est_s > budget_s:
        return f"needs ~{est_s:.0f} s, over the time budget of {budget_s:.0f} s"
    return None


def _full_level(new_size: int) -> int:
    return 19 if new_size <= 64 * MiB else 12  # level 19 runs ~0.3 s/MiB: too slow on big images


def _write_candidate(method: str, params: dict[str, Any], old: str, new: str, out_path: str, header: bytes) -> int:
    """Write one complete patch to ``out_path``: the container ``header`` and a payload of ours, or another
    tool's format bare; return its size."""
    with open(out_path, "wb") as out:
        if method == BLOCKS:
            out.write(header)
            limit = params.get("whole_limit", -1)
            _blocks.make_blocks(old, new, out, whole_limit=limit, tmpdir=os.path.dirname(out_path) or None)
        elif method == BSDIFF4:
            _methods.make_bsdiff4(old, new, out)
        elif method == ZSTD:
            _methods.make_zstd(old, new, out, settings=params.get("settings", "19"))
        else:
            raise ValueError(f"unknown delta method {method!r}")
        out.flush()
        return out.tell()


def _child_main() -> None:
    """Entry of ``python -m common.delta.engine``: one candidate, arguments as JSON on stdin."""
    args = json.loads(sys.stdin.buffer.read())
    try:
        size = _write_candidate(
            args["method"], args["params"], args["old"], args["new"], args["out"], bytes.fromhex(args["header"])
        )
        reply = {"status": "ok", "value": size}
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which records the attempt as failed
        reply = {"status": "error", "value": f"{type(exc).__name__}: {exc}"}
    reply["rss"] = peak_rss_bytes()
    sys.stdout.write(json.dumps(reply))


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it was exec'ed.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` across
    fork and exec, so a child would report its parent's peak if that was larger.
    """
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_isolated(cand: Candidate, old: str, new: str, out_path: str, header: bytes, timeout: float) -> Attempt:
    # a fresh interpreter (not fork: the caller may have threads or an event loop; not multiprocessing's
    # spawn, which re-imports the caller's __main__), killed if it overruns the budget
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    args = {"method": cand.method, "params": cand.params, "old": old, "new": new, "out": out_path, "header": header.hex()}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.delta.engine"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=root,
    )
    try:
        stdout, stderr = proc.communicate(json.dumps(args).encode(), timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Attempt(cand.label, cand.method, None, time.monotonic() - t0, None, f"timeout after {timeout:.0f} s")
    seconds = time.monotonic() - t0
    try:
        reply = json.loads(stdout)
    except ValueError:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return Attempt(cand.label, cand.method, None, seconds, None, f"failed: exit code {proc.returncode} {tail[0]}")
    if reply["status"] == "ok":
        return Attempt(cand.label, cand.method, reply["value"], seconds, reply["rss"])
    return Attempt(cand.label, cand.method, None, seconds, reply["rss"], f"failed: {reply['value']}")


def _run_inline(cand: Candidate, old: str, new: str, out_path: str, header: bytes) -> Attempt:
    t0 = time.monotonic()
    size = _write_candidate(cand.method, cand.params, old, new, out_path, header)
    return Attempt(cand.label, cand.method, size, time.monotonic() - t0, None)


def make_delta(
    old_path: str | os.PathLike[str],
    new_path: str | os.PathLike[str],
    patch_path: str | os.PathLike[str],
    *,
    time_budget_s: float = 110.0,
    memory_budget_bytes: int = 2 << 30,
    methods: Sequence[str] = DEFAULT_METHODS,
    worth_ratio: float = WORTH_RATIO,
    isolate: bool = True,
    full_level: int | None = None,
    blocks_window: str = "auto",
    workers: int = 2,
) -> DeltaResult:
    """Write the smallest delta from ``old_path`` to ``new_path`` into ``patch_path``.

    Raises ``DeltaNotWorthIt`` (no patch written) when the smallest is over
    ``worth_ratio`` of the zstd-compressed full image, ``DeltaError`` when no
    candidate finished. Up to ``workers`` candidates run at once while their
    estimated memory fits the budget together. ``isolate=False`` runs them one
    by one in this process: faster to start, but no time limit is enforced and
    memory is not measured.
    """
    t0 = time.monotonic()
    # absolute: isolated candidates run with the repository as their working directory
    old, new, patch = os.path.abspath(old_path), os.path.abspath(new_path), Path(os.path.abspath(patch_path))
    old_size, old_sha = file_digest(old)
    new_size, new_sha = file_digest(new)
    level = full_level if full_level is not None else _full_level(new_size)

    full: dict[str, Any] = {}

    def compress_full() -> None:  # zstd releases the GIL: this runs beside the candidates
        try:
            full["size"] = _methods.full_compressed_size(new, level=level)
        except Exception as exc:  # noqa: BLE001 -- re-raised as DeltaError by the caller after join()
            full["error"] = exc

    full_thread = threading.Thread(target=compress_full, name="delta-full-size", daemon=True)
    full_thread.start()

    plan = plan_candidates(
        old_size,
        new_size,
        time_budget_s=time_budget_s,
        memory_budget_bytes=memory_budget_bytes,
        methods=methods,
        blocks_window=blocks_window,
    )
    attempts: list[Attempt] = []
    made: dict[str, tuple[int, Path]] = {}
    try:
        queue = deque(plan)
        running: dict[Future[Attempt], tuple[Candidate, Path]] = {}
        with ThreadPoolExecutor(max_workers=max(1, workers if isolate else 1)) as threads:
            while queue or running:
                cand = queue[0] if queue else None
                in_use = sum(c.est_bytes for c, _ in running.values())
                if cand is not None and (not running or in_use + cand.est_bytes <= memory_budget_bytes):
                    queue.popleft()
                    remaining = time_budget_s - (time.monotonic() - t0)
                    if cand.skip:
                        attempts.append(Attempt(cand.label, cand.method, None, 0.0, None, f"skipped: {cand.skip}"))
                        continue
                    if remaining <= 0 or cand.est_seconds > remaining:
                        note = f"skipped: needs ~{cand.est_seconds:.0f} s, {max(remaining, 0):.0f} s of the budget left"
                        attempts.append(Attempt(cand.label, cand.method, None, 0.0, None, note))
                        continue
                    out = patch.with_name(f".{patch.name}.{cand.label.replace('/', '-')}.tmp")
                    hdr = PatchHeader(cand.method, old_size, new_size, old_sha, new_sha).pack()
                    if isolate:
                        fut = threads.submit(_run_isolated, cand, old, new, str(out), hdr, remaining)
                    else:
                        fut = threads.submit(_run_inline, cand, old, new, str(out), hdr)
                    running[fut] = (cand, out)
                    if len(running) < max(1, workers if isolate else 1):
                        continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    cand, out = running.pop(fut)
                    attempt = fut.result()
                    attempts.append(attempt)
                    if attempt.patch_size is not None:
                        made[cand.label] = (attempt.patch_size, out)
                        continue
                    out.unlink(missing_ok=True)
                    if cand.label == "bsdiff4-blocks/whole" and blocks_window == "auto":
                        # fall back to local windows: fast and small on any image
                        queue.appendleft(_local_candidate(old_size, new_size, memory_budget_bytes, time_budget_s))
        if not made:  # raised without waiting for the full image's size (a daemon thread): nothing to compare
            notes = "; ".join(f"{a.label}: {a.note}" for a in attempts)
            raise DeltaError(f"no delta from {old!r} to {new!r}: no candidate finished ({notes})")
        full_thread.join()
        if "error" in full:
            raise DeltaError(f"cannot compress {new!r} to size the full image: {full['error']}") from full["error"]
        peaks = [a.peak_rss_bytes for a in attempts if a.peak_rss_bytes is not None]
        result_args: dict[str, Any] = {
            "old_size": old_size,
            "new_size": new_size,
            "full_size": full["size"],
            "full_level": level,
            "peak_rss_bytes": max(peaks) if peaks else None,
            "old_sha256": old_sha,
            "new_sha256": new_sha,
            "attempts": tuple(attempts),
        }
        best_label = min(made, key=lambda k: made[k][0])
        best_size, best_path = made[best_label]
        method = _method_of(best_label)
        container = len(PatchHeader(method, old_size, new_size, old_sha, new_sha).pack()) if method == BLOCKS else 0
        result = DeltaResult(
            method=method, patch_size=best_size, seconds=time.monotonic() - t0, container_bytes=container, **result_args
        )
        if best_size > worth_ratio * result.full_size:
            raise DeltaNotWorthIt(
                f"no delta from {old!r} to {new!r}: the smallest ({best_label}, {best_size} bytes) is over "
                f"{worth_ratio:.0%} of the compressed full image ({result.full_size} bytes)",
                result,
            )
        _fsync_rename(best_path, patch)
        del made[best_label]
        return result
    finally:
        for _, path in made.values():
            path.unlink(missing_ok=True)


def _method_of(label: str) -> str:
    return label.split("/", 1)[0]


def _fsync_rename(src: Path, dst: Path) -> None:
    fd = os.open(src, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(src, dst)
    dfd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


async def make_delta_in_pool(
    pool: Executor,
    old_path: str | os.PathLike[str],
    new_path: str | os.PathLike[str],
    patch_path: str | os.PathLike[str],
    **kwargs: Any,
) -> DeltaResult:
    """``make_delta`` in ``pool`` (a ``ProcessPoolExecutor``), so the caller's event loop never blocks."""
    loop = asyncio.get_running_loop()
    call = functools.partial(make_delta, os.fspath(old_path), os.fspath(new_path), os.fspath(patch_path), **kwargs)
    return await loop.run_in_executor(pool, call)


if __name__ == "__main__":
    _child_main()

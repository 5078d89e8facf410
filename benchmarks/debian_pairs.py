"""Two released versions of a Debian package, fetched once with ``apt-get download`` into a cache directory.

Real binaries that are not ours, for the delta engine's benchmark and its test against the bare zstd tool:
``released_pair("openssh-client", cache)`` returns the extracted trees (``<dir>/root/...``) of the oldest and
the newest version this machine's apt sources offer (``apt-cache madison``), in Debian's version order. What
is in the cache is used as is, so the pair stays the same once fetched. ``PairUnavailable`` says why there is
no pair (no apt, one version offered, no network).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

__all__ = ["PairUnavailable", "released_pair"]


class PairUnavailable(RuntimeError):
    """No two released versions could be had; the message says why and what to do."""


def _debian_order(a: str, b: str) -> int:
    if a == b:
        return 0
    return -1 if subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0 else 1


def released_pair(package: str, cache: Path) -> tuple[Path, Path]:
    """Extracted (old, new) versions of ``package``: the oldest and newest in the cache, else fetched."""
    order = functools.cmp_to_key(_debian_order)
    have = sorted((p for p in cache.glob(f"{package}_*") if (p / ".done").exists()),
                  key=lambda p: order((p / ".done").read_text()))
    if len(have) >= 2:
        return have[0], have[-1]
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PairUnavailable("needs apt-get and dpkg-deb (Debian) to fetch two released versions of a package")
    out = subprocess.run(["apt-cache", "madison", package], capture_output=True, text=True).stdout
    versions = sorted({line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2}, key=order)
    if len(versions) < 2:
        raise PairUnavailable(f"apt offers fewer than two versions of {package} here (run apt-get update)")
    dirs = []
    for version in (versions[0], versions[-1]):
        d = cache / f"{package}_{version.replace(':', '%3a')}"
        if not (d / ".done").exists():
            d.mkdir(parents=True, exist_ok=True)
            got = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=d, capture_output=True, text=True)
            debs = list(d.glob("*.deb"))
            if got.returncode != 0 or not debs:
                raise PairUnavailable(f"apt-get download {package}={version} failed (no network?): {got.stderr.strip()[-200:]}")
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(d / "root")], check=True)
            (d / ".done").write_text(version)
        dirs.append(d)
    return dirs[0], dirs[1]

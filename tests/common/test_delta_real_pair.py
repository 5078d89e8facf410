"""Our delta of real released binaries (not ours) is never larger than the bare ``zstd --patch-from --long``.

The pair: two released versions of Debian's ``openssh-client`` (whatever two versions this machine's apt
sources offer), fetched once with ``apt-get download`` into ``benchmarks/.cache/deb/`` (git-ignored). The
files: a binary where the zstd tool's own patch is close to ours, and the package's gzipped changelog,
which nothing compresses (only the patch's framing differs there). Skipped, saying why, without apt,
network or the ``zstd`` command.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from common.delta import make_delta
from common.delta._methods import window_log_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# benchmarks/debian_pairs.py (the benchmark fetches the same pairs), loaded by path: putting benchmarks/ on
# sys.path would let benchmarks/queue.py shadow the standard library's queue
_spec = importlib.util.spec_from_file_location("debian_pairs", REPO / "benchmarks" / "debian_pairs.py")
debian_pairs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(debian_pairs)

CACHE = REPO / "benchmarks" / ".cache" / "deb"
PACKAGE = "openssh-client"
FILES = ("usr/lib/openssh/ssh-keysign", "usr/bin/scp", "usr/share/doc/openssh-client/changelog.Debian.gz")


def released_pair(package: str) -> tuple[Path, Path]:
    try:
        return debian_pairs.released_pair(package, CACHE)
    except debian_pairs.PairUnavailable as exc:
        pytest.skip(str(exc))


def bare_zstd(old: Path, new: Path, out: Path) -> int:
    """The smallest patch the zstd tool makes with --patch-from and long matching over old + new."""
    wlog = window_log_for(old.stat().st_size + new.stat().st_size)
    sizes = []
    for level in (["-19"], ["--ultra", "-22"]):
        subprocess.run(["zstd", "-q", "-f", *level, f"--long={wlog}", f"--patch-from={old}", str(new), "-o", str(out)],
                       check=True, capture_output=True)
        sizes.append(out.stat().st_size)
    return min(sizes)


@pytest.mark.parametrize("member", FILES)
def test_our_delta_is_never_larger_than_the_bare_zstd_tool(tmp_path: Path, member: str) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed (apt-get install zstd)")
    a, b = released_pair(PACKAGE)
    old, new = a / "root" / member, b / "root" / member
    if not (old.exists() and new.exists()):
        pytest.skip(f"{member} is not in both versions of {PACKAGE}")
    if old.read_bytes() == new.read_bytes():
        pytest.skip(f"{member} is the same in {a.name} and {b.name}")
    bare = bare_zstd(old, new, tmp_path / "bare.zst")
    r = make_delta(old, new, tmp_path / "ours.delta", worth_ratio=100.0)  # compare even where a delta is not worth it
    assert r.patch_size <= bare + 0, (
        f"{member} {a.name} -> {b.name}: ours {r.patch_size} bytes ({r.method}, container {r.container_bytes}), "
        f"zstd --patch-from {bare}; {[(x.label, x.patch_size) for x in r.attempts]}")

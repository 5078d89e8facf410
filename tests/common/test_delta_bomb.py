"""A delta bomb (issue 15, point 6): a few KiB of patch that expand to far more than the signed manifest's image.
``apply_delta`` with the manifest's size and SHA-256 stops at that size, keeps within its memory bound, leaves no
partial file, and refuses a header that disagrees with the manifest before writing a byte."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from common.delta import apply_delta, make_delta
from common.errors import DeltaError

IMAGE = 64 << 10  # what the signed manifest says the new image is
BOMB = 1 << 30  # what the patch expands to: 1 GiB of zeros


def _bomb(path: Path) -> None:
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    with open(path, "wb") as f, cctx.stream_writer(f, size=BOMB) as w:
        zero = bytes(1 << 20)
        for _ in range(BOMB >> 20):
            w.write(zero)


def test_a_bare_zstd_bomb_stops_at_the_manifests_size_with_bounded_memory(tmp_path: Path) -> None:
    old = tmp_path / "old.img"
    old.write_bytes(os.urandom(IMAGE))
    bomb = tmp_path / "bomb.delta"
    _bomb(bomb)
    assert bomb.stat().st_size < 200 << 10  # a small patch...
    new = tmp_path / "new.img"
    # run in a child so its peak RSS is its own: the bound holds however large the bomb's output
    code = (
        "import sys\n"
        "from common.delta import apply_delta\n"
        "from common.errors import DeltaError\n"
        f"try:\n    apply_delta({str(old)!r}, {str(bomb)!r}, {str(new)!r}, expect_size={IMAGE}, expect_sha256='00' * 32)\n"
        "except DeltaError as exc:\n    print('refused:', exc)\n"
        # VmHWM is this image's own peak; ru_maxrss would carry the forking parent's (a big pytest worker) over exec
        "print('peak_kib', [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert f"produces more than the {IMAGE} bytes of its image" in out, out
    peak_kib = int(out.split("peak_kib")[1])
    assert peak_kib < 200 << 10, f"peak RSS {peak_kib} KiB while applying a 1 GiB bomb"  # far below the bomb
    assert not new.exists() and not list(tmp_path.glob(".new.img*"))  # no partial file left


def test_a_header_that_disagrees_with_the_manifest_is_refused_before_writing(tmp_path: Path) -> None:
    old, target = tmp_path / "old.img", tmp_path / "target.img"
    base = os.urandom(IMAGE)
    old.write_bytes(base)
    target.write_bytes(base[: IMAGE // 2] + os.urandom(IMAGE // 2))
    patch = tmp_path / "p.delta"
    make_delta(str(old), str(target), str(patch), methods=("bsdiff4-blocks",), isolate=False)  # a header with sizes
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    new = tmp_path / "new.img"
    with pytest.raises(DeltaError, match=r"declares a \d+-byte image, the manifest 1000"):
        apply_delta(old, patch, new, expect_size=1000, expect_sha256=sha)
    with pytest.raises(DeltaError, match="declares image SHA-256"):
        apply_delta(old, patch, new, expect_size=IMAGE, expect_sha256="ab" * 32)
    assert not list(tmp_path.glob("*new.img*"))
    result = apply_delta(old, patch, new, expect_size=IMAGE, expect_sha256=sha)  # the manifest's image: applied
    assert (result.new_size, result.new_sha256) == (IMAGE, sha) and new.read_bytes() == target.read_bytes()


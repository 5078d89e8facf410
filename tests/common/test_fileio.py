"""common.fileio: the one durable file replace (a full disk never leaves a truncated file), directory fsync,
and the SHA-256 of a file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import EdgeFleetError, FileWriteError
from common.fileio import fsync_dir, replace_file, sha256_file, write_atomic

ROOT = Path(__file__).resolve().parents[2]

FULL_DISK = """
import json, resource, signal, sys
from common.errors import EdgeFleetError
from common.fileio import write_atomic

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))  # stands in for a disk with 64 KiB free
try:
    write_atomic(sys.argv[1], b"new" * 400_000, 0o644)
    print(json.dumps({"raised": None}))
except Exception as exc:
    print(json.dumps({"raised": type(exc).__name__, "typed": isinstance(exc, EdgeFleetError) and isinstance(exc, OSError),
                      "path": getattr(exc, "path", None), "message": str(exc)}))
"""


def test_a_file_is_replaced_whole_with_its_mode_and_no_temporary_left(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"one", 0o600)
    write_atomic(path, bytearray(b"two" * 10_000), 0o644)
    assert path.read_bytes() == b"two" * 10_000 and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_full_disk_leaves_the_good_file_and_raises_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_atomic(path, b"good" * 1000, 0o644)
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["raised"] == "FileWriteError" and out["typed"] and out["path"] == str(path)
    assert str(path) in out["message"] and "too large" in out["message"].lower() and "intact" in out["message"]
    assert path.read_bytes() == b"good" * 1000  # not replaced by a truncated one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_missing_directory_is_a_typed_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "key"
    with pytest.raises(FileWriteError, match="nowhere") as caught:
        write_atomic(path, b"x")
    assert isinstance(caught.value, OSError) and isinstance(caught.value, EdgeFleetError) and caught.value.path == str(path)
    with pytest.raises(FileWriteError, match="nowhere"):
        fsync_dir(tmp_path / "nowhere")


def test_replace_file_moves_a_written_file_over_another(tmp_path: Path) -> None:
    (tmp_path / "image.tmp").write_bytes(b"rebuilt")
    (tmp_path / "image").write_bytes(b"old")
    replace_file(tmp_path / "image.tmp", tmp_path / "image")
    assert (tmp_path / "image").read_bytes() == b"rebuilt" and not (tmp_path / "image.tmp").exists()
    with pytest.raises(FileWriteError, match="image.tmp"):
        replace_file(tmp_path / "image.tmp", tmp_path / "image")


def test_sha256_of_a_file_block_by_block_and_of_its_first_bytes(tmp_path: Path) -> None:
    data = os.urandom(300_001)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", block_size=4096) == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "f", 1000, block_size=64) == hashlib.sha256(data[:1000]).hexdigest()
    assert sha256_file(tmp_path / "f", 10**9) == hashlib.sha256(data).hexdigest()
    with pytest.raises(OSError):
        sha256_file(tmp_path / "missing")

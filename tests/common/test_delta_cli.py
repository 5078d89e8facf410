"""``edgefleet delta make|apply``: prints method, sizes and time; clear errors with non-zero exits."""

import json
import os
import random

import pytest
from click.testing import CliRunner

from common.cli import main


@pytest.fixture
def pair(tmp_path):
    rng = random.Random(7)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    old = b" ".join(rng.choice(words) for _ in range(60_000))
    new = bytearray(old)
    new[50_000:50_000] = b"inserted release notes " * 40
    new[200_000:200_100] = bytes(100)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(bytes(new))
    return tmp_path / "old", tmp_path / "new"


def run(*args):
    return CliRunner().invoke(main, ["delta", *map(str, args)])


def test_make_and_apply_print_method_sizes_and_time(tmp_path, pair):
    old, new = pair
    patch = tmp_path / "p.delta"
    r = run("make", old, new, patch)
    assert r.exit_code == 0, r.output
    assert f"wrote {patch}: " in r.output and "old " in r.output and "new " in r.output
    assert "full image zstd-19" in r.output and "delta/full" in r.output and " s" in r.output
    assert "bsdiff4-blocks/whole" in r.output  # each candidate's outcome
    out = tmp_path / "rebuilt"
    r = run("apply", old, patch, out)
    assert r.exit_code == 0, r.output
    assert "verified" in r.output and out.read_bytes() == new.read_bytes()


def test_json_output(tmp_path, pair):
    old, new = pair
    patch = tmp_path / "p.delta"
    r = run("make", old, new, patch, "--json", "--method", "bsdiff4-blocks")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ok"] and doc["method"] == "bsdiff4-blocks" and doc["patch_size"] == patch.stat().st_size
    assert {"old_size", "new_size", "full_size", "ratio", "seconds", "attempts"} <= set(doc)
    r = run("apply", old, patch, tmp_path / "o", "--json")
    assert json.loads(r.output)["new_size"] == new.stat().st_size


def test_errors_exit_non_zero_with_a_clear_message(tmp_path, pair):
    old, new = pair
    patch = tmp_path / "p.delta"
    assert run("make", old, new, patch, "--method", "zstd-patch-from").exit_code == 0
    data = bytearray(patch.read_bytes())
    data[-10] ^= 0xFF
    patch.write_bytes(data)
    r = run("apply", old, patch, tmp_path / "o")
    assert r.exit_code == 2 and "Error: patch" in r.output and str(patch) in r.output
    r = run("apply", new, patch, tmp_path / "o")  # a bare zstd frame cannot tell the base; its checksum fails
    assert r.exit_code == 2 and "not its old image" in r.output
    assert run("make", old, new, patch, "--method", "bsdiff4-blocks").exit_code == 0
    r = run("apply", new, patch, tmp_path / "o")  # our container refuses the wrong base before writing anything
    assert r.exit_code == 2 and "is not its old image" in r.output
    r = run("make", old, tmp_path / "missing", patch)
    assert r.exit_code == 2 and "does not exist" in r.output


def test_not_worth_it_exits_1(tmp_path):
    (tmp_path / "a").write_bytes(os.urandom(100_000))
    (tmp_path / "b").write_bytes(os.urandom(100_000))
    r = run("make", tmp_path / "a", tmp_path / "b", tmp_path / "p")
    assert r.exit_code == 1 and "ship the full image" in r.output
    assert not (tmp_path / "p").exists()
    r = run("make", tmp_path / "a", tmp_path / "b", tmp_path / "p", "--json")
    assert r.exit_code == 1 and json.loads(r.output)["ok"] is False

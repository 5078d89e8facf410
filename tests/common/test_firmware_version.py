"""Firmware version order and parse errors."""

import itertools

import pytest

from common.errors import VersionError
from common.firmware import Version, compare_versions, parse_version

ASCENDING = [
    "0.9",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.9.2",
    "1.10.0",
    "2",
    "10.0.0.1",
]


def test_ascending_table_sorts_as_listed():
    shuffled = list(reversed(ASCENDING))
    assert [str(v) for v in sorted(map(Version, shuffled))] == ASCENDING
    for a, b in itertools.pairwise(ASCENDING):
        assert Version(a) < Version(b), (a, b)
        assert compare_versions(a, b) == -1 and compare_versions(b, a) == 1


def test_numbers_compare_as_numbers_not_text():
    assert Version("1.10.0") > Version("1.9.2")
    assert Version("2.10") > Version("2.9.99")


@pytest.mark.parametrize("a,b", [("2.1", "2.1.0"), ("v1.2.3", "1.2.3"), ("1.2.3+build.7", "1.2.3"), ("1", "1.0.0.0")])
def test_equal_forms(a, b):
    assert Version(a) == Version(b) and hash(Version(a)) == hash(Version(b))
    assert compare_versions(a, b) == 0


@pytest.mark.parametrize("text", ["", "abc", "1..2", "1.2.", ".1", "1.0-", "1.0+", "1.0-rc..1", "1 .0", "1.0\n", "x" * 100])
def test_unparseable_versions_raise_a_clear_error(text):
    with pytest.raises(VersionError, match="does not parse") as e:
        parse_version(text)
    assert isinstance(e.value, ValueError)


def test_non_string_is_refused():
    with pytest.raises(VersionError, match="must be a string"):
        Version(1.2)  # type: ignore[arg-type]


def test_version_order_does_not_load_cryptography():
    # the device agent orders versions long before a manifest arrives; Ed25519 costs ~6 MB RSS
    import subprocess
    import sys

    code = "import sys, common.firmware as f; f.Version('1.0'); f.verify_chunk; assert 'cryptography' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_names_resolve():
    import common.delta
    import common.firmware

    for module in (common.firmware, common.delta):
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None, name

"""Firmware version strings and their order.

Accepted: ``[v]N(.N)*[-PRE][+BUILD]`` with decimal release numbers, a
pre-release of dot-separated alphanumeric identifiers and build metadata that
is ignored in comparisons (semver-like, any number of release parts)::

    1.9.2 < 1.10.0        numbers compare as numbers
    2.1 == 2.1.0          trailing zero parts do not count
    2.1.1-rc.1 < 2.1.1    a pre-release sorts before its release
    2.1.1-alpha < 2.1.1-alpha.1 < 2.1.1-beta    semver's pre-release rules

This orders ordinary versions as ``cloud/fleet/query/match.py``'s lenient device filter
does; unlike it, a string that does not parse raises ``VersionError`` naming it.
"""

from __future__ import annotations

import functools
import re

from common.errors import VersionError

__all__ = ["Version", "compare_versions", "parse_version"]

_RE = re.compile(
    r"[vV]?(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
MAX_LEN = 64


@functools.total_ordering
class Version:
    """A parsed firmware version; compare with ``<``, ``==``; ``str()`` gives the original text."""

    __slots__ = ("_key", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise VersionError(f"firmware version must be a string, got {type(text).__name__}")
        m = _RE.fullmatch(text) if len(text) <= MAX_LEN else None
        if m is None:
            raise VersionError(
                f"firmware version {text[:MAX_LEN]!r} does not parse: expected N.N.N with an optional "
                "-prerelease and +build (e.g. 1.10.0, 2.0.0-rc.1)"
            )
        release = [int(p) for p in m["release"].split(".")]
        while len(release) > 1 and release[-1] == 0:
            release.pop()
        pre = m["pre"]
        # semver: numeric identifiers sort numerically and before alphanumeric ones; a release after its pre-releases
        pre_key = (1,) if pre is None else (0, *[(0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")])
        self.text = text
        self._key = (tuple(release), pre_key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key == other._key

    def __lt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Version({self.text!r})"


def parse_version(text: str) -> Version:
    """``Version(text)``, raising ``VersionError`` if it does not parse."""
    return Version(text)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, the same as, or newer than ``b``."""
    va, vb = Version(a), Version(b)
    return (va > vb) - (va < vb)

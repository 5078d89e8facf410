"""The real tools tests run (GRUB's and U-Boot's environment tools, ...), from the one list in tests/tools.txt.

    @requires("grub-editenv")
    def test_grub_...(): ...

``make test`` installs what is missing first (``make tools``: apt-get, as root), so there nothing is skipped;
a plain ``pytest`` on a machine without them skips those tests, each saying which command is missing, its
Debian package and how to get it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

__all__ = ["TOOLS", "missing", "requires"]

TOOLS: dict[str, str] = {
    command: package
    for line in (Path(__file__).with_name("tools.txt")).read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
    for command, package in [line.split()]
}


def missing(*commands: str) -> str | None:
    """Why a test of ``commands`` cannot run here (None: they are all installed)."""
    unknown = [c for c in commands if c not in TOOLS]
    assert not unknown, f"{unknown} not listed in tests/tools.txt (add COMMAND PACKAGE there)"
    absent = [c for c in commands if shutil.which(c) is None]
    if not absent:
        return None
    packages = sorted({TOOLS[c] for c in absent})
    return (f"real tool(s) {', '.join(absent)} not installed (Debian package {', '.join(packages)}): "
            f"`make tools` installs them (as root), `make test` does it first")


def requires(*commands: str) -> pytest.MarkDecorator:
    """Skip the test, saying what is missing and how to install it, unless every one of ``commands`` is here."""
    why = missing(*commands)
    return pytest.mark.skipif(why is not None, reason=why or "")

"""Production modules stay short: over MAX_LINES lines, a module says why it is one piece.

The note is a comment line in the module, ``# one-piece: <why>``, e.g.
``# one-piece: the codec is the only msgpack user; splitting it would spread the wire format over modules``.
A module that grows past the limit without one fails this test, named with its length: split it into
modules named for what they hold, or add the note if it truly reads best whole.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("cloud", "common", "gateway", "device_agent", "simulations")
MAX_LINES = 450
NOTE = re.compile(r"^[ \t]*#[ \t]*one-piece:[ \t]*(\S.*)$", re.MULTILINE)


def long_modules_without_a_note(root: Path = ROOT) -> list[str]:
    """``path (N lines)`` for each production module over MAX_LINES lines with no ``# one-piece: why`` line."""
    found = []
    for package in PRODUCTION:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            lines = text.count("\n") + (not text.endswith("\n") and bool(text))
            if lines > MAX_LINES and not NOTE.search(text):
                found.append(f"{path.relative_to(root)} ({lines} lines)")
    return found


def test_no_production_module_over_the_limit_without_a_note_saying_why_it_is_one_piece() -> None:
    found = long_modules_without_a_note()
    assert not found, (f"{len(found)} production module(s) over {MAX_LINES} lines without a '# one-piece: <why>' "
                       "note: split them, or say why each reads best whole:\n  " + "\n  ".join(found))


def test_the_check_sees_a_long_module_and_accepts_its_note(tmp_path: Path) -> None:
    body = "".join(f"x{i} = {i}\n" for i in range(MAX_LINES + 1))
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "big.py").write_text(body)
    (tmp_path / "gateway" / "short.py").write_text("x = 1\n")
    assert long_modules_without_a_note(tmp_path) == [f"gateway/big.py ({MAX_LINES + 1} lines)"]
    (tmp_path / "gateway" / "big.py").write_text("# one-piece:\n" + body)  # a note must say why
    assert long_modules_without_a_note(tmp_path) == [f"gateway/big.py ({MAX_LINES + 2} lines)"]
    (tmp_path / "gateway" / "big.py").write_text("# one-piece: one table, read top to bottom\n" + body)
    assert long_modules_without_a_note(tmp_path) == []

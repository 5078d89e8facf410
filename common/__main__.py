"""``python -m common ...`` is the ``edgefleet`` command (used where the script is not on PATH)."""

from common.cli import main

main(prog_name="edgefleet")

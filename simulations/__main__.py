"""``python -m simulations ...`` is ``edgefleet sim ...``."""

from simulations.cli import sim

sim(prog_name="python -m simulations")

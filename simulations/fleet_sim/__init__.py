"""``edgefleet sim fleet``: the whole fleet in virtual time, every tier's real core (docs/SIMULATION.md)."""

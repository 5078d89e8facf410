"""``edgefleet sim`` (also ``python -m simulations``): fleets in virtual time, the real cores."""

from __future__ import annotations

import json

import click

__all__ = ["sim"]


@click.group()
def sim() -> None:
    """Run a whole fleet in virtual time over an in-memory network (deterministic per seed)."""


@sim.command()
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, byte-identical output.")
@click.option("--sites", type=int, default=2, show_default=True)
@click.option("--devices-per-site", type=int, default=10, show_default=True)
@click.option("--duration", type=float, default=120.0, show_default=True, help="Virtual seconds of sampling.")
@click.option("--loss", type=float, default=0.05, show_default=True, help="Probability that a frame is lost.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def telemetry(seed: int, sites: int, devices_per_site: int, duration: float, loss: float, as_json: bool) -> None:
    """Devices sample and send through gateways to the cloud over lossy links; count what arrived."""
    from simulations.telemetry import TelemetryScenario, run_telemetry

    result = run_telemetry(TelemetryScenario(seed=seed, sites=sites, devices_per_site=devices_per_site, duration_s=duration, loss=loss))
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    for key, value in result.items():
        click.echo(f"{key:>28}  {value}")

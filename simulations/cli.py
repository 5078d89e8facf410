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


@sim.command()
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same output.")
@click.option("--sites", type=int, default=50, show_default=True)
@click.option("--devices-per-site", type=int, default=100, show_default=True)
@click.option("--outages-per-day", type=float, default=1.0, show_default=True, help="Mean uplink outages per site per day.")
@click.option("--max-days", type=float, default=20.0, show_default=True, help="Give up after this many virtual days.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def rollout(seed: int, sites: int, devices_per_site: int, outages_per_day: float, max_days: float, as_json: bool) -> None:
    """A staged rollout (canary, two waves) to every device, sites driving their part from signed plans
    inside their maintenance windows while their uplinks go down at random; checks nothing installed
    outside a window and no device is left stuck."""
    from simulations.rollout_sim import RolloutScenario, run_rollout_sim

    result = run_rollout_sim(RolloutScenario(seed=seed, sites=sites, devices_per_site=devices_per_site,
                                             outages_per_site_day=outages_per_day, max_days=max_days))
    for key, value in result.items():
        click.echo(f"{key:>28}  {value}")
    ok = result["installs_outside_window"] == 0 and result["stuck_devices"] == 0 and result["rollout_state"] == "completed"
    click.echo(f"result: {'OK' if ok else 'FAILED'}: rollout {result['rollout_state']} in {result['virtual_hours']} virtual hours")
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    if not ok:
        raise SystemExit(1)


@sim.command()
@click.option("--scenario", "scenario_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="A TOML scenario (simulations/scenarios/).")
@click.option("--seed", type=int, default=None, help="Overrides the scenario's seed; same seed, same run.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write a markdown summary and PNG plots here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def fleet(scenario_path: str, seed: int | None, report_dir: str | None, as_json: bool) -> None:
    """The whole fleet in virtual time: every tier's real core (telemetry, uplink caps and windows, firmware
    through the site cache, rollouts with site autonomy, A/B updates with power cuts, revocations) under the
    scenario's faults; named invariants checked; exits 1 if any failed, naming the first event that broke it."""
    from simulations.fleet_sim.run import run_fleet
    from simulations.fleet_sim.scenario import load_scenario

    result, fleet_run = run_fleet(load_scenario(scenario_path, seed=seed))
    if report_dir is not None:
        from simulations.fleet_sim.report import write_report

        write_report(fleet_run, result, report_dir)
    click.echo(f"wall {result['wall_s']} s, cpu {fleet_run.cpu_s} s, peak rss {result['peak_rss_mb']} MB", err=True)
    for v in fleet_run.invariants.first.values():
        click.echo(f"INVARIANT FAILED {v.name}: seed {result['seed']}, virtual time {v.virtual_s} s: {v.event}", err=True)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            click.echo(f"{key:>34}  {value}")
    if result["invariants_failed"]:
        raise SystemExit(1)

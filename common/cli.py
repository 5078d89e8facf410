"""The ``edgefleet`` command: a click group whose sub-commands load lazily.

A device process imports only what ``edgefleet agent`` needs: the web framework
and database driver behind ``edgefleet cloud`` or ``edgefleet devices`` are
never imported there. Each entry below names ``module:attribute`` of a click
command, imported only when that command runs (or when ``--help`` lists it,
which needs only the short help given here).
"""

from __future__ import annotations

import importlib

import click

__all__ = ["COMMANDS", "main"]

# name -> (module:attribute, short help shown by `edgefleet --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "cloud": ("cloud.node_cli:cloud", "Run the cloud coordinator (device registry, store, operator API)."),
    "gateway": ("gateway.cli:gateway", "Run a site gateway (store-and-forward between devices and cloud)."),
    "agent": ("device_agent.cli:agent", "Run a device agent (telemetry with a durable local buffer)."),
    "devices": ("cloud.cli.devices:devices", "Operator commands on devices (list, tag, set-state, ghosts, ping, logs, reboot...)."),
    "sites": ("cloud.cli.sites:sites", "Operator commands on sites (list, show)."),
    "alerts": ("cloud.cli.alerts:alerts", "Operator commands on alerts (list, ack, silence)."),
    "groups": ("cloud.cli.fleet:groups", "Device groups: static (listed) and dynamic (a saved --where query)."),
    "config": ("cloud.cli.config:config", "Layered device config: set (with locks, --dry-run), explain, status."),
    "metrics": ("cloud.cli.metrics:metrics", "Device metrics over time (raw, per-minute and per-hour rollups)."),
    "demo": ("simulations.demo:demo", "Start a whole fleet as real processes on 127.0.0.1 and report."),
    "sim": ("simulations.cli:sim", "Run a fleet in virtual time over an in-memory network."),
    "delta": ("common.delta.cli:delta", "Make and apply binary deltas between firmware images."),
    "release": ("cloud.cli.releases:release", "Firmware releases: create, publish, list, show; keys, offline signing."),
    "ca": ("cloud.cli.ca:ca", "The fleet CA: init (root encrypted with a passphrase, intermediate)."),
    "enroll-token": ("cloud.cli.security:enroll_token", "Site claim tokens for zero-touch enrollment (create)."),
    "users": ("cloud.cli.security:users", "Operators and their roles and sites (add)."),
    "tokens": ("cloud.cli.security:tokens", "Operators' API tokens, stored hashed (create)."),
    "audit": ("cloud.cli.security:audit", "The audit log of every mutating action, allowed or refused."),
    "rollout": ("cloud.cli.rollouts:rollout", "Rollouts: create, show (--watch), pause, resume, abort, list."),
}


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # the listing uses the short help above, so `edgefleet --help` imports no tier
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgefleet")
def main() -> None:
    """EdgeFleet: fleet device management for industrial edge sites.

    Three tiers: `edgefleet cloud` coordinates many sites, `edgefleet gateway`
    runs at each site, `edgefleet agent` runs on each device. `edgefleet demo`
    starts a whole fleet on this machine and reports what happened.
    """

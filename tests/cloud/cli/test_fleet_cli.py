"""The fleet's operator commands against a served API: what they print, and how they refuse."""

from __future__ import annotations

from click.testing import CliRunner

from cloud.cli.devices import devices
from tests.cloud.cli.test_devices_cli import TOKEN, Served, runner, served  # noqa: F401  (fixtures)


def test_devices_show_prints_state_tags_groups_config_and_the_inventory(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(devices, ["show", "pump-1", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "device pump-1: active, site site-a, gateway gw-1"
    assert "  config: desired -, applied -" in lines
    assert lines[-2:] == ["  inventory:", "    firmware_version  1.2.0"]


def test_devices_show_of_an_unknown_device_exits_2(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(devices, ["show", 'no"pe', "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 2 and "No device by the id of 'no\"pe'" in result.output


def test_tag_takes_plus_and_minus_only(runner: CliRunner, served: Served) -> None:
    result = runner.invoke(devices, ["tag", "pump-7", "canary", "--api", served.url, "--token", TOKEN])
    assert result.exit_code == 2 and "+TAG to add or -TAG to remove" in result.output


def test_set_state_refused_by_the_table_says_why(runner: CliRunner, served: Served) -> None:
    args = ["--api", served.url, "--token", TOKEN]
    ok = runner.invoke(devices, ["set-state", "valve-22", "quarantined", "--reason", "odd traffic", *args])
    assert ok.output.strip() == "valve-22: active -> quarantined by operator (odd traffic)"
    refused = runner.invoke(devices, ["set-state", "valve-22", "pending", "--reason", "x", *args])
    assert refused.exit_code == 2 and "cannot go from quarantined to pending" in refused.output
    history = runner.invoke(devices, ["history", "valve-22", *args])
    assert history.output.splitlines()[1].split()[2:5] == ["active", "quarantined", "operator"]

"""The node commands' shared part (``common.nodecli``): flags, config merging, logging, running the loop."""

from __future__ import annotations

import asyncio
import json
import logging

import click
import pytest
from click.testing import CliRunner

from cloud.node_cli import cloud
from common.errors import ConfigError, KeyFileError
from common.logs import JsonFormatter
from common.nodecli import node_config, node_options, run_node
from device_agent.cli import agent
from gateway.cli import gateway

SHARED = ["--config", "--data-dir", "--log-level", "--log-format"]


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """node_config sets up the root logger; leave it as the other tests expect it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
        h.close()
    root.setLevel(level)


@click.command()
@node_options("Where this node keeps its state.")
@click.option("--site")
@click.option("--peer", "peers", multiple=True)
def node(config_path: str | None, **flags: object) -> None:
    cfg = node_config(config_path, {"data_dir": "./var", "site": "s0", "peers": ["p0"], "log_level": "info",
                                    "log_format": "json"}, flags, repeatable=("peers",), node="n1")
    click.echo(json.dumps(cfg))


def options(cmd: click.Command) -> list[str]:
    return [p.opts[0] for p in cmd.params if isinstance(p, click.Option)]


def test_shared_flags_come_first_and_last_around_the_nodes_own() -> None:
    assert options(node) == ["--config", "--data-dir", "--site", "--peer", "--log-level", "--log-format"]


@pytest.mark.parametrize("cmd", [cloud, gateway, agent])
def test_every_node_command_takes_the_shared_flags_and_has_help(cmd: click.Command) -> None:
    opts = options(cmd)
    assert opts[:2] == SHARED[:2] and opts[-2:] == SHARED[2:]
    result = CliRunner().invoke(cmd, ["--help"])
    assert result.exit_code == 0 and "--data-dir" in result.output and "--log-format [json|text]" in result.output


def test_defaults_then_the_file_then_the_flags(tmp_path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('site = "from-file"\npeers = ["f1", "f2"]\nlog_format = "text"\n')
    runner = CliRunner()
    cfg = json.loads(runner.invoke(node, ["--config", str(path)], catch_exceptions=False).output)
    assert (cfg["site"], cfg["peers"], cfg["log_format"]) == ("from-file", ["f1", "f2"], "text")
    cfg = json.loads(runner.invoke(node, ["--config", str(path), "--site", "flag", "--peer", "x"],
                                   catch_exceptions=False).output)
    assert (cfg["site"], cfg["peers"]) == ("flag", ["x"])  # a repeatable flag given replaces the file's list
    cfg = json.loads(runner.invoke(node, [], catch_exceptions=False).output)
    assert (cfg["site"], cfg["peers"], cfg["data_dir"]) == ("s0", ["p0"], "./var")


def test_a_key_the_node_does_not_know_is_refused_naming_it(tmp_path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("sight = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'sight'"):
        node_config(str(path), {"site": "s", "log_level": "info", "log_format": "json"}, {})


def test_logging_is_set_up_with_the_nodes_id() -> None:
    node_config(None, {"gateway_id": "gw-7", "log_level": "warning", "log_format": "json"}, {}, node_key="gateway_id")
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
    assert ours and ours[-1].formatter.node == "gw-7" and root.level == logging.WARNING


def test_run_node_returns_the_drivers_result_and_names_the_node_on_an_error() -> None:
    async def ok() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"stored": 3}

    async def broken() -> None:
        raise KeyFileError("curve.secret is readable by others (mode 0644); run: chmod 600 curve.secret")

    async def interrupted() -> None:
        raise KeyboardInterrupt

    assert run_node("cloud", ok()) == {"stored": 3}
    with pytest.raises(click.ClickException, match=r"^gateway: curve.secret is readable by others"):
        run_node("gateway", broken())
    with pytest.raises(SystemExit) as exit_:
        run_node("agent", interrupted())
    assert exit_.value.code == 130

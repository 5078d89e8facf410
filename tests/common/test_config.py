from __future__ import annotations

import importlib
import re
from pathlib import Path

import click
import pytest

import common.config
from common.config import load_config
from common.errors import ConfigError

DEFAULTS = {
    "data_dir": "./var/gateway",
    "upstream": "tcp://127.0.0.1:7700",
    "port": 7701,
    "heartbeat": 1.0,
    "fsync": True,
    "sites": ["a"],
    "site": None,
}


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_all() -> None:
    assert common.config.__all__ == ["load_config"]


def test_no_file_no_overrides_gives_a_copy_of_the_defaults() -> None:
    cfg = load_config(None, DEFAULTS, {})
    assert cfg == DEFAULTS
    cfg["sites"].append("b")
    assert DEFAULTS["sites"] == ["a"]  # the defaults are never shared or mutated


def test_file_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9000\nupstream = "tcp://cloud:7700"\nheartbeat = 2.5\nfsync = false\n')
    cfg = load_config(path, DEFAULTS, {"port": 9100, "upstream": None, "data_dir": None})
    assert cfg == {**DEFAULTS, "port": 9100, "upstream": "tcp://cloud:7700", "heartbeat": 2.5, "fsync": False}


def test_none_overrides_are_ignored() -> None:
    assert load_config(None, DEFAULTS, dict.fromkeys(DEFAULTS)) == DEFAULTS


def test_false_and_zero_overrides_are_applied() -> None:
    cfg = load_config(None, DEFAULTS, {"fsync": False, "port": 0, "data_dir": ""})
    assert (cfg["fsync"], cfg["port"], cfg["data_dir"]) == (False, 0, "")


def test_int_is_accepted_where_float_is_expected(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "heartbeat = 3\n"), DEFAULTS, {})
    assert cfg["heartbeat"] == 3.0 and type(cfg["heartbeat"]) is float
    cfg = load_config(None, DEFAULTS, {"heartbeat": 2})
    assert type(cfg["heartbeat"]) is float


def test_none_default_accepts_any_value(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'site = "plant-3"\n'), DEFAULTS, {})["site"] == "plant-3"


def test_unknown_key_in_file_names_file_key_and_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 1\nprot = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, DEFAULTS, {})
    msg = str(info.value)
    assert f"config file {path!r}" in msg
    assert "unknown key 'prot'" in msg
    assert "known keys: data_dir, fsync, heartbeat, port, site, sites, upstream" in msg


def test_unknown_table_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'gateway'"):
        load_config(write(tmp_path, "[gateway]\nport = 1\n"), DEFAULTS, {})


def test_unknown_override_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^command line: unknown key 'verbose' \(known keys: "):
        load_config(None, DEFAULTS, {"verbose": True})


@pytest.mark.parametrize(
    ("toml", "key", "expected", "got"),
    [
        ('port = "7701"', "port", "int", "str"),
        ("port = 7701.0", "port", "int", "float"),
        ("port = true", "port", "int", "bool"),
        ("heartbeat = true", "heartbeat", "float", "bool"),
        ('heartbeat = "1s"', "heartbeat", "float", "str"),
        ('fsync = "yes"', "fsync", "bool", "str"),
        ("fsync = 1", "fsync", "bool", "int"),
        ("upstream = 7700", "upstream", "str", "int"),
        ('sites = "a"', "sites", "list", "str"),
        ("data_dir = 1979-05-27", "data_dir", "str", "date"),
        ("upstream = {host = 'x'}", "upstream", "str", "dict"),
    ],
)
def test_wrong_type_in_file(tmp_path: Path, toml: str, key: str, expected: str, got: str) -> None:
    path = write(tmp_path, toml + "\n")
    where = re.escape(repr(path))
    with pytest.raises(ConfigError, match=rf"^config file {where}: key {key!r} expects {expected}, got {got} "):
        load_config(path, DEFAULTS, {})


def test_wrong_type_in_overrides() -> None:
    with pytest.raises(ConfigError, match=r"^command line: key 'port' expects int, got str \('80'\)$"):
        load_config(None, DEFAULTS, {"port": "80"})


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.toml")
    where = re.escape(repr(path))
    with pytest.raises(ConfigError, match=rf"^config file {where}: cannot be read: No such file or directory") as info:
        load_config(path, DEFAULTS, {})
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot be read"):
        load_config(str(tmp_path), DEFAULTS, {})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "port = \n")
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(repr(path))}: invalid TOML: ") as info:
        load_config(path, DEFAULTS, {})
    assert info.value.__cause__ is not None


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('upstream = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8"):
        load_config(str(path), DEFAULTS, {})


def test_duplicate_key_is_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid TOML"):
        load_config(write(tmp_path, "port = 1\nport = 2\n"), DEFAULTS, {})


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), DEFAULTS, {"port": 1}) == {**DEFAULTS, "port": 1}


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_config(None, DEFAULTS, {"port": "x"})


# -- every value a node's flags take, the loader takes for that key ------------------------------------------
# (the gateway's --*-quota-mb flags are click floats: `--bulk-quota-mb 0.25` once exited with ConfigError
# because the quota defaults were ints; the type of each default must be what its flag gives)

NODE_COMMANDS = [("cloud.node_cli", "cloud"), ("gateway.cli", "gateway"), ("device_agent.cli", "agent")]
SAMPLES = {click.FLOAT: 0.25, click.INT: 3, click.STRING: "x", click.BOOL: True}


def _sample(option: click.Option) -> object:
    if option.is_flag:
        return True
    value = option.type.choices[0] if isinstance(option.type, click.Choice) else SAMPLES[option.type]
    return [value] if option.multiple else value


@pytest.mark.parametrize(("module", "command"), NODE_COMMANDS)
def test_the_loader_accepts_every_value_a_nodes_flags_take(module: str, command: str) -> None:
    mod = importlib.import_module(module)
    options = [p for p in getattr(mod, command).params if isinstance(p, click.Option) and p.name != "config_path"]
    assert options
    board_flags = getattr(mod, "BOARD_FLAGS", {})  # the agent's board flags fill its [board] table
    for option in options:
        if option.name in board_flags:
            from dataclasses import fields

            from device_agent.board.profile import BoardProfile

            assert board_flags[option.name] in {f.name for f in fields(BoardProfile)}, option.opts[0]
            continue
        assert option.name in mod.DEFAULTS, f"{module}: flag {option.opts[0]} has no config key"
        value = _sample(option)
        assert load_config(None, mod.DEFAULTS, {option.name: value})[option.name] == value, option.opts[0]


def test_fractional_quotas_from_flags_and_files_reach_the_gateways_stream_policies(tmp_path: Path) -> None:
    from common.streams import GATEWAY_POLICIES, MIB, with_quotas_mb
    from gateway.cli import DEFAULTS as GATEWAY

    cfg = load_config(write(tmp_path, "state_quota_mb = 0.5\ncritical_quota_mb = 2\n"), GATEWAY,
                      {"bulk_quota_mb": 0.25})
    policies = with_quotas_mb(GATEWAY_POLICIES, cfg)
    assert [policies[s].max_bytes for s in ("critical", "state", "bulk")] == [2 * MIB, MIB // 2, MIB // 4]

"""The operator command modules' layout (issue 12): each imports only the shared helpers and the API client
(``devices`` also the two modules whose device commands it groups; ``ca``, which works on files, the
CA's issuing code), imports nothing after its first definition, and adds nothing to another module's
click group."""

from __future__ import annotations

import ast
from pathlib import Path

import click

import cloud.cli
from cloud.cli import devices, fleet, security

CLI = Path(cloud.cli.__file__).parent
SHARED = {"cloud.cli.helpers", "cloud.cli.client"}
COMMAND_MODULES = sorted(p for p in CLI.glob("*.py") if p.stem not in ("__init__", "helpers", "client"))


def cloud_imports(tree: ast.Module) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cloud"):
            out |= {f"{node.module}.{a.name}" if node.module == "cloud.cli" else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("cloud")}
    return out


def test_command_modules_import_only_the_helpers_and_the_client() -> None:
    assert len(COMMAND_MODULES) >= 8
    for path in COMMAND_MODULES:
        allowed = SHARED | {"devices": {"cloud.cli.ddi", "cloud.cli.fleet", "cloud.cli.security"}, "ca": {"cloud.security.ca"}}.get(
            path.stem, set())
        found = cloud_imports(ast.parse(path.read_text()))
        assert found <= allowed, f"{path.name} imports {sorted(found - allowed)}"


def test_no_import_after_the_first_definition() -> None:
    for path in [*COMMAND_MODULES, CLI / "helpers.py"]:
        body = ast.parse(path.read_text()).body
        first_def = next(i for i, n in enumerate(body) if isinstance(n, ast.FunctionDef | ast.ClassDef))
        late = [n.lineno for n in body[first_def:] if isinstance(n, ast.Import | ast.ImportFrom)]
        assert not late, f"{path.name}: import at line(s) {late} after its first definition"


def test_no_module_adds_to_another_modules_group() -> None:
    for path in COMMAND_MODULES:
        tree = ast.parse(path.read_text())
        own = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        own |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("command", "add_command", "group"):
                base = node.value
                if isinstance(base, ast.Name) and base.id != "click":
                    assert base.id in own, f"{path.name}:{node.lineno} adds to {base.id}, a group it does not define"


def test_devices_is_built_from_every_features_device_commands() -> None:
    names = set(devices.devices.commands)
    assert {c.name for c in devices.COMMANDS} <= names
    assert {c.name for c in fleet.DEVICE_COMMANDS} <= names
    assert {c.name for c in security.DEVICE_COMMANDS} <= names
    assert all(isinstance(c, click.Command) for c in devices.devices.commands.values())

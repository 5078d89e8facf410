"""The import contracts in pyproject.toml (``[tool.importlinter]``), checked with import-linter.

Each contract is one test, so a broken one is named on its own and its message lists the offending
imports as ``lint-imports`` prints them (``gateway.driver -> cloud.ca (l.47)``). The graph is built once
with the same options the config gives the ``lint-imports`` command; the second half of the file proves
each contract live by adding one forbidden import to that graph and running the same contract again.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import grimp
import importlinter.api  # noqa: F401  (configures import-linter's adapters: option readers, graph builder)
import pytest
from importlinter.application import output, use_cases
from importlinter.application.app_config import settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
OPTIONS = use_cases.read_user_options(str(CONFIG))
CONTRACT_IDS = [c["id"] for c in OPTIONS.contracts_options]
use_cases._register_built_in_contract_types()  # what lint_imports does first: "forbidden", "acyclic_siblings", ...


class _GivenGraph:
    """import-linter's graph-builder port, answering with a graph built beforehand (a copy each time)."""

    def __init__(self, graph: grimp.ImportGraph) -> None:
        self.graph = graph

    def build(self, root_package_names: list[str], cache_dir: Any = None, include_external_packages: bool = False,
              exclude_type_checking_imports: bool = False) -> grimp.ImportGraph:
        return copy.deepcopy(self.graph)


@pytest.fixture(scope="module")
def real_graph() -> grimp.ImportGraph:
    """The import graph of the tree, built by import-linter's own builder from the config's options."""
    session = OPTIONS.session_options
    return settings.GRAPH_BUILDER.build(
        root_package_names=session["root_packages"],
        include_external_packages=session.get("include_external_packages") in (True, "True", "true"),
        exclude_type_checking_imports=session.get("exclude_type_checking_imports") in (True, "True", "true"),
        cache_dir=None,
    )


def check(graph: grimp.ImportGraph, contract_id: str) -> tuple[bool, str]:
    """Run one contract of the config on ``graph``: (kept, what import-linter says about it when broken)."""
    builder = settings.GRAPH_BUILDER
    settings.configure(GRAPH_BUILDER=_GivenGraph(graph))
    try:
        report = use_cases.create_report(OPTIONS, limit_to_contracts=(contract_id,), cache_dir=None)
    finally:
        settings.configure(GRAPH_BUILDER=builder)
    assert not report.could_not_run, f"contract {contract_id!r} could not run: {report.invalid_contract_options}"
    [(contract, result)] = report.get_contracts_and_checks()
    if result.kept:
        return True, ""
    with output.console.capture() as captured:
        contract.render_broken_contract(result)
    return False, f"{contract.name}\n\n{captured.get()}"


@pytest.mark.parametrize("contract_id", CONTRACT_IDS)
def test_import_contract_holds(real_graph: grimp.ImportGraph, contract_id: str) -> None:
    kept, why = check(real_graph, contract_id)
    assert kept, f"import contract {contract_id!r} broken (pyproject.toml [tool.importlinter]):\n{why}"


# -- each contract is live: one forbidden import added to the real graph breaks it, and is named -------------

INJECTED = [
    ("tiers", "gateway.core", "cloud.core"),
    ("tiers", "device_agent.driver", "gateway.driver"),
    ("tiers", "cloud.http.app", "device_agent.core"),
    ("common", "common.errors", "gateway.core"),
    ("simulations", "cloud.core", "simulations.virtual"),
    ("cores", "device_agent.core", "zmq"),
    ("cores", "gateway.core", "lmdb"),
    ("cores", "cloud.core", "sqlalchemy"),
    ("cores", "common.transfer.download", "asyncio"),
    ("lean-agent", "device_agent.driver", "fastapi"),
    ("acyclic", "common.errors", "common.config"),  # common.config imports common.errors
    ("acyclic", "simulations.fleet", "simulations.demo"),  # simulations.demo imports simulations.fleet
]


@pytest.mark.parametrize(("contract_id", "importer", "imported"), INJECTED)
def test_an_added_forbidden_import_breaks_the_contract(real_graph: grimp.ImportGraph, contract_id: str,
                                                       importer: str, imported: str) -> None:
    assert contract_id in CONTRACT_IDS
    assert importer in real_graph.modules and imported in real_graph.modules, (importer, imported)
    assert not real_graph.direct_import_exists(importer=importer, imported=imported), "already imported"
    graph = copy.deepcopy(real_graph)
    graph.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    kept, why = check(graph, contract_id)
    assert not kept, f"contract {contract_id!r} kept with {importer} -> {imported} added"
    if contract_id == "acyclic":
        # the cycle is reported by the two siblings it runs through (".errors -> .config" in common)
        parent = importer.rsplit(".", 1)[0]
        assert f"No cycles are allowed in {parent}." in why, why
        assert f".{importer.rsplit('.', 1)[1]} -> " in why or f".{imported.rsplit('.', 1)[1]} -> " in why, why
    else:
        assert f"{importer} -> {imported}" in why, why


def test_the_gateway_to_cloud_contract_fails_the_same_way_from_the_command_line(real_graph: grimp.ImportGraph) -> None:
    """``lint-imports`` (what a developer runs, `make contracts`) on a graph with gateway -> cloud added:
    exit status 1 and the import named."""
    graph = copy.deepcopy(real_graph)
    graph.add_import(importer="gateway.core", imported="cloud.core", line_number=7,
                     line_contents="from cloud.core import CloudCore")
    builder = settings.GRAPH_BUILDER
    settings.configure(GRAPH_BUILDER=_GivenGraph(graph))
    try:
        with output.console.capture() as captured:
            ok = use_cases.lint_imports(str(CONFIG), limit_to_contracts=("tiers",), cache_dir=None, no_logo=True)
    finally:
        settings.configure(GRAPH_BUILDER=builder)
    text = captured.get()
    assert ok is use_cases.FAILURE, text
    assert "gateway is not allowed to import cloud" in text and "gateway.core -> cloud.core (l.7)" in text, text

"""A device installs `pip install edgefleet`: the agent (idle, updating a real board, checking signed commands)
loads only libraries of the project's base dependencies; the cloud's libraries are in the `cloud` extra."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOUD = {"sqlalchemy", "fastapi", "starlette", "uvicorn", "httpx", "rich", "jinja2", "prometheus-client", "pydantic"}

# everything a device agent process imports: its CLI and driver, a real board's update, deltas, signed commands
PROBE = """
import json, sys
from importlib.metadata import packages_distributions
import device_agent.cli, device_agent.driver, device_agent.updater, device_agent.download, device_agent.enroll
import device_agent.board.boards, device_agent.update, device_agent.update.grub, device_agent.update.uboot
import common.delta, common.command_auth, common.firmware.manifest, common.rotation, common.shaping
import zstandard
owners = packages_distributions()
# _distutils_hack: setuptools' .pth hook in a venv, loaded by the interpreter at startup, not by the agent
dists = {d.lower().replace("_", "-") for m in list(sys.modules) if not m.startswith("_distutils_hack")
         for d in owners.get(m.split(".")[0], [])}
print(json.dumps(sorted(dists)))
"""


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def base_dependencies() -> set[str]:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not CLOUD & {_norm(Requirement(r).name) for r in project["dependencies"]}
    assert CLOUD - {"starlette", "pydantic", "prometheus-client"} <= {
        _norm(Requirement(r).name) for r in project["optional-dependencies"]["cloud"]}
    return {_norm(Requirement(r).name) for r in project["dependencies"]}


def closure(names: set[str]) -> set[str]:
    """The installed distributions ``names`` pull in (their own base requirements, transitively)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    out, todo = set(), list(names)
    while todo:
        name = _norm(todo.pop())
        if name in out:
            continue
        out.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        todo += [Requirement(r).name for r in requires
                 if Requirement(r).marker is None or Requirement(r).marker.evaluate({"extra": ""})]
    return out


def test_the_agent_loads_only_the_base_dependencies_and_no_cloud_library():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout)) - {"edgefleet"}
    allowed = closure(base_dependencies())
    assert loaded, "the probe saw no third-party distribution at all"
    assert not loaded & CLOUD, f"the agent loads cloud libraries: {sorted(loaded & CLOUD)}"
    assert loaded <= allowed, f"the agent loads {sorted(loaded - allowed)}, not in pyproject's base dependencies"


def test_an_idle_agent_does_not_load_cryptography_or_the_update_machinery():
    probe = ("import sys, device_agent.cli, device_agent.driver, common.keys; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography', 'apscheduler', 'zstandard'}), "
             "'device_agent.update.core' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "False"], done.stdout

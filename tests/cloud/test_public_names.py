"""Every module of the cloud (and of the shared modules it moved to ``common``) names its public API in
``__all__``, and every name there exists; a package ``__init__`` that only documents its modules has none."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import cloud

SHARED = ["common.rollouts", "common.rollouts.engine", "common.rollouts.events", "common.rollouts.plan",
          "common.rollouts.states", "common.rollouts.windows", "common.rollouts.siteplan", "common.pki",
          "common.nodecli", "common.transfer.responder"]
MODULES = sorted(m.name for m in pkgutil.walk_packages(cloud.__path__, "cloud.")) + SHARED


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    public = getattr(module, "__all__", None)
    if public is None:
        assert module.__file__.endswith("__init__.py") and not [
            n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == name
        ], f"{name} defines public names but has no __all__"
        return
    missing = [n for n in public if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"
    assert len(set(public)) == len(public), f"{name}.__all__ repeats a name"

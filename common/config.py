"""A tier's settings: its defaults, then its TOML config file, then command-line flags.

``load_config(path, defaults, overrides)`` returns a new dict with exactly the keys
of ``defaults``. The file is a flat TOML table (``bind = "tcp://..."``); a key the
tier does not know is an error, not silently ignored, since it is usually a typo.
An override whose value is ``None`` (a flag not given) is skipped.

The type of each default decides the type of its key: ``bool`` and ``int`` are
kept apart (``true`` is not a port); an ``int`` is accepted where a ``float`` is
expected and converted; a default of ``None`` accepts any value. Errors are
``ConfigError`` and name the file (or "command line"), the key and the cause.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from typing import Any

from common.errors import ConfigError

__all__ = ["load_config"]


def _check(source: str, key: str, value: Any, default: Any) -> Any:
    expected = type(default)
    if default is None or type(value) is expected:
        return value
    if expected is float and type(value) is int:
        return float(value)
    raise ConfigError(f"{source}: key {key!r} expects {expected.__name__}, got {type(value).__name__} ({value!r})")


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path!r}: cannot be read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path!r}: not UTF-8: {exc}") from exc


def load_config(path: str | None, defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``defaults`` < the TOML file at ``path`` (if any) < non-``None`` ``overrides``."""
    cfg = copy.deepcopy(dict(defaults))
    known = ", ".join(sorted(defaults))
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path is not None:
        layers.append((f"config file {str(path)!r}", _read(str(path))))
    layers.append(("command line", {k: v for k, v in overrides.items() if v is not None}))
    for source, values in layers:
        for key, value in values.items():
            if key not in defaults:
                raise ConfigError(f"{source}: unknown key {key!r} (known keys: {known})")
            cfg[key] = _check(source, key, value, defaults[key])
    return cfg

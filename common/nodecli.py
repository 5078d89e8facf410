"""What the three node commands share: ``edgefleet cloud``, ``edgefleet gateway`` and ``edgefleet agent``.

    @click.command()
    @node_options("Where keys, the outbox, allowed_devices and stats live.")
    @click.option("--site", help="The site this gateway serves.")      # the node's own flags
    def gateway(config_path, **flags):
        cfg = node_config(config_path, DEFAULTS, flags, repeatable=("link_windows",), node_key="gateway_id")
        stats = run_node("gateway", run_gateway(GatewayConfig(...)))

- ``node_options(data_dir_help)``: the flags every node takes, with the same names, types and
  help: ``--config`` (a TOML file; flags override it) and ``--data-dir`` first, ``--log-level``
  and ``--log-format`` (``json`` lines or ``text``) last, the node's own flags in between.
- ``node_config``: the node's defaults < its TOML file < the flags given (``common.config``);
  a repeatable flag given no value falls back to the file's; then logging is set up on the
  root logger with the node's id (``common.logs``). Returns the merged settings.
- ``run_node``: runs the node's main coroutine on a new event loop. The node's driver turns
  SIGTERM and SIGINT into a clean stop (``common.process.stop_on_signals``); a Ctrl-C before
  that is in place exits 130 without a traceback, and an EdgeFleet error that stops the node
  (a key file, the store, a busy port) is logged and shown as one line naming the node, exit 1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any, TypeVar

import click

from common.config import load_config
from common.errors import EdgeFleetError
from common.logs import setup_logging

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "node_config", "node_options", "run_node"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("edgefleet.node")


def node_options(data_dir_help: str) -> Callable[[F], F]:
    """Add ``--config`` and ``--data-dir`` before the command's own options, the log options after them."""

    def decorate(fn: F) -> F:
        first = [
            click.Option(["--config", "config_path"], type=click.Path(dir_okay=False, exists=True),
                         help="TOML file; flags override it."),
            click.Option(["--data-dir"], help=data_dir_help),
        ]
        last = [
            click.Option(["--log-level"], type=click.Choice(list(LOG_LEVELS))),
            click.Option(["--log-format"], type=click.Choice(list(LOG_FORMATS))),
        ]
        # click lists a command's options in the reverse order of ``__click_params__``
        params: list[click.Parameter] = getattr(fn, "__click_params__", [])
        fn.__click_params__ = [*reversed(last), *params, *reversed(first)]  # type: ignore[attr-defined]
        return fn

    return decorate


def node_config(
    config_path: str | None,
    defaults: Mapping[str, Any],
    flags: dict[str, Any],
    *,
    repeatable: Collection[str] = (),
    node_key: str | None = None,
    node: str | None = None,
) -> dict[str, Any]:
    """Merge defaults < file < flags (``ConfigError`` names the file or flag and the key) and set up logging.

    ``repeatable`` names flags given ``multiple=True``: none given leaves the file's list (or the
    default). The log lines carry ``node`` or the value of ``node_key`` (e.g. the gateway id).
    """
    given = dict(flags)
    for key in repeatable:
        given[key] = list(given.get(key) or ()) or None
    cfg = load_config(config_path, defaults, given)
    setup_logging(cfg["log_level"], cfg["log_format"], node=node if node is not None else cfg.get(node_key or ""))
    return cfg


def run_node(name: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` (the node's driver) to its end on a new event loop; see the module doc for errors."""
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:  # before the driver's signal handlers were in place
        raise SystemExit(130) from None
    except EdgeFleetError as exc:
        log.error(f"{name} stopped", exc_info=True)
        raise click.ClickException(f"{name}: {exc}") from exc

"""What the operator API is built from: one small object handed to ``create_app`` and to every route module.

    ctx = ApiContext(store, token, executor=store_thread.urgent, hooks=ApiHooks(on_command=push),
                     releases=release_service, rollouts=rollout_service, security=security_service)
    app = create_app(ctx)

``store`` is read and written through its repositories (``store.telemetry``, ``store.fleet``...),
always off the event loop: ``await ctx.call(fn)`` runs ``fn`` on ``executor`` (the cloud's one
store thread, operator calls first) or, without one, in Starlette's worker threads. A service
left ``None`` has its routes not mounted. ``hooks`` are how the API tells the running cloud
what it just committed, so it can act at once (push a command to a gateway, hold back a
silenced alert, send a new revocation list).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from fastapi.concurrency import run_in_threadpool

from cloud.fleet.lifecycle import DEFAULT_GHOST_S
from cloud.fleet.rollup import DEFAULT_RETENTION, Retention
from cloud.store import Store
from common.errors import EdgeFleetError

if TYPE_CHECKING:
    from cloud.metrics import CloudMetrics
    from cloud.releases.service import ReleaseService
    from cloud.rollouts.service import RolloutService
    from cloud.security.service import SecurityService

__all__ = ["API_PREFIX", "ApiContext", "ApiHooks", "FleetOptions", "wall_ms"]

API_PREFIX = "/v1"
T = TypeVar("T")

log = logging.getLogger("edgefleet.api")


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class ApiHooks:
    """Called on the event loop after the API committed a change (each optional)."""

    on_command: Callable[[str, int], None] | None = None  # (device_id, seq): a command was queued
    on_silence: Callable[[str, int], None] | None = None  # (target, until_ms): a silence was added
    on_revocations: Callable[[bytes], None] | None = None  # the newly signed revocation list
    on_ddi_tokens: Callable[[str], None] | None = None  # a site's DDI tokens changed: send its gateway the table


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """The fleet routes' defaults: metric retention (for ``tier=auto``) and the ghost silence."""

    retention: Retention = DEFAULT_RETENTION
    ghost_s: float = DEFAULT_GHOST_S


@dataclass(frozen=True)
class ApiContext:
    store: Store
    token: str  # the bootstrap operator token (DATA_DIR/api_token)
    executor: Executor | None = None
    now_ms: Callable[[], int] = wall_ms
    hooks: ApiHooks = field(default_factory=ApiHooks)
    fleet: FleetOptions = field(default_factory=FleetOptions)
    releases: ReleaseService | None = None
    rollouts: RolloutService | None = None
    security: SecurityService | None = None
    metrics: CloudMetrics | None = None  # GET /metrics (cloud.http.prometheus) when given

    async def call(self, fn: Callable[[], T]) -> T:
        """Run a blocking store function off the event loop; its ``StoreError`` reaches the error handler."""
        if self.executor is None:
            return await run_in_threadpool(fn)
        return await asyncio.wrap_future(self.executor.submit(fn))

    def ddi_changed(self, site: str) -> None:
        """A DDI token of ``site`` was issued or revoked: its gateway hears the new table now (or at its next
        session, which always sends the current one)."""
        if self.hooks.on_ddi_tokens is not None:
            self.hooks.on_ddi_tokens(site)

    def commanded(self, made: list[tuple[str, int]]) -> None:
        """Tell the cloud about commands just queued, so they go to their gateways now.

        A failure here does not fail the request: the commands are committed and stay queued
        for their gateway's next session; failing would only make the operator send them twice."""
        if self.hooks.on_command is None:
            return
        for device_id, seq in made:
            try:
                self.hooks.on_command(device_id, seq)
            except (EdgeFleetError, RuntimeError):  # e.g. the store thread is shutting down
                log.exception("pushing a new command failed", extra={"device": device_id, "seq": seq})

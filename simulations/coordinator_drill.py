"""``edgefleet demo --coordinators N --database postgresql://... --kill-coordinator K``: the cloud as N processes.

N coordinators (``edgefleet cloud``) share one PostgreSQL and one identity (``ProcFleet.start_coordinator``);
each gateway is given every coordinator's endpoint, the list rotated so the sessions spread over them. The
drill SIGKILLs the coordinator holding the leader lease K times while a rollout runs (the first at the
canary, the next at each later stage, or as soon as the previous takeover is done), restarting each one
killed so N stay up, and reports:

- ``coordinator_failovers``: new leader terms after a kill (another coordinator, or the killed one restarted, took
  the lease with a newer token);
- ``max_leader_takeover_s``: the longest time from a kill to another coordinator holding the lease;
- ``max_ingest_pause_s``: the longest gap, per gateway, between consecutive arrivals of its devices' telemetry
  (``received_ms`` as stored) from 2 s before a kill to 30 s after it: how long a site's data waited.

The database's coordination rows are read directly (``cloud.coordination.postgres``); the database is the
operator's (``--database``): the drill adds its rows to whatever is there, so give it an empty one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from cloud.coordination import postgres as pg
from simulations.fleet import ProcFleet

__all__ = ["Coordinators"]


class Coordinators:
    def __init__(self, fleet: ProcFleet, n: int, database: str, kills: int, say: Callable[[str], None]) -> None:
        database = _sqlalchemy_url(database)
        self.fleet, self.n, self.database, self.kills, self.say = fleet, max(1, n), database, kills, say
        self.engine = sa.create_engine(_sqlalchemy_url(database)) if database else None
        self.killed: list[tuple[str, float, int]] = []  # (coordinator, monotonic, wall ms)
        self.takeovers: list[float] = []
        self._waiting: tuple[str, int, float] | None = None  # (killed holder, its token, when) until another leads

    def start(self, extra: list[str]) -> dict[str, str]:
        """The cloud: one process (SQLite, or ``--database``), or N over the database."""
        if self.n == 1 and not self.kills:
            return self.fleet.start_cloud(extra + (["--database", self.database] if self.database else []))
        self.fleet.sample_interval_s = max(self.fleet.sample_interval_s, 1.0)  # the drill measures failover, not ingest
        first = {}
        for i in range(self.n):
            name = "cloud" if i == 0 else f"cloud-{i + 1}"
            eps = self.fleet.start_coordinator(name, self.database, extra)
            first = first or eps
        self.say(f"{self.n} coordinators up over {sa.make_url(self.database).render_as_string(hide_password=True)}")
        return first

    def leader(self) -> tuple[str, int]:
        """The coordinator holding an unexpired lease and its token (``("", 0)``: none now)."""
        if self.engine is None:
            return "cloud", 0
        with self.engine.connect() as conn:
            row = pg.lease_row(conn)
        if row is None or row["expires_ms"] <= row["now_ms"]:
            return "", 0
        return str(row["holder"]), int(row["token"])

    def wait_leader(self, timeout_s: float = 60.0) -> str:
        """The coordinator leading now (waiting for one): where leader-only operator calls go."""
        deadline = time.monotonic() + timeout_s
        while not (holder := self.leader()[0]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no coordinator took the leader lease within {timeout_s:g} s; see the logs")
            time.sleep(0.1)
        return holder

    def step(self, stage_index: int) -> None:
        """Called from the drill's loop: note a takeover; kill the leader when the next kill is due."""
        if self._waiting is not None:
            holder, token, at = self._waiting
            now_leader, now_token = self.leader()
            if now_leader and now_token > token:
                self.takeovers.append(time.monotonic() - at)
                self._waiting = None
                self.say(f"DRILL: {now_leader} leads (token {now_token}) {self.takeovers[-1]:.1f} s after {holder} was killed")
            return
        k = len(self.killed)
        if k >= self.kills or stage_index < 0:
            return
        if k and stage_index < k and time.monotonic() - self.killed[-1][1] < 15.0:
            return  # kill k comes at stage k (the canary is stage 0), or 15 s after the last
        holder, token = self.leader()
        if not holder:
            return
        self.fleet.kill(holder)
        self.killed.append((holder, time.monotonic(), int(time.time() * 1000)))
        self._waiting = (holder, token, time.monotonic())
        self.say(f"DRILL: {holder} (the leader, token {token}) killed with SIGKILL; restarted")
        self.fleet.restart(holder)

    def wait_done(self, timeout_s: float = 30.0) -> None:
        """Let the last takeover finish (so it is counted)."""
        deadline = time.monotonic() + timeout_s
        while self._waiting is not None and time.monotonic() < deadline:
            self.step(-1)
            time.sleep(0.1)

    def max_ingest_pause_s(self) -> float:
        """The longest gap between a gateway's consecutive arrivals around each kill."""
        if self.engine is None or not self.killed:
            return 0.0
        worst = 0
        q = sa.text("SELECT d.gateway_id, t.received_ms FROM telemetry t JOIN devices d ON d.device_id = t.device_id "
                    "WHERE t.received_ms BETWEEN :a AND :b ORDER BY d.gateway_id, t.received_ms")
        with self.engine.connect() as conn:
            for _, _, at_ms in self.killed:
                last: dict[str, int] = {}
                for gw, ms in conn.execute(q, {"a": at_ms - 2000, "b": at_ms + 30_000}):
                    if gw in last:
                        worst = max(worst, ms - last[gw])
                    last[gw] = ms
        return round(worst / 1000, 2)

    def report(self) -> dict[str, Any]:
        return {
            "coordinators": self.n,
            "coordinators_killed": len(self.killed),
            "coordinator_failovers": len(self.takeovers),
            "max_leader_takeover_s": round(max(self.takeovers), 2) if self.takeovers else None,
            "max_ingest_pause_s": self.max_ingest_pause_s(),
        }

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def _sqlalchemy_url(url: str) -> str:
    """postgresql://... as SQLAlchemy with psycopg 3 spells it."""
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url

"""A fake fleet for the rollout engine's unit tests: devices that hold state, and a fake clock.

Each fake device takes ``install_ms`` from receiving an install to reporting its
outcome (commit, or rollback when its id is in ``bad``); a download-only install
reports ``downloaded`` at once. Devices at an offline site get nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.rollouts import DeviceEvent, DeviceInfo, DeviceReport, Install, Persist, RolloutEngine, Tick


@dataclass
class FakeFleet:
    engine: RolloutEngine
    now_ms: int
    install_ms: int = 60_000
    bad: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)  # devices that never answer
    offline_sites: set[str] = field(default_factory=set)
    installs: list[tuple[int, Install]] = field(default_factory=list)  # (when, effect) for real installs
    downloads: list[tuple[int, Install]] = field(default_factory=list)
    persisted: list[Persist] = field(default_factory=list)
    _due: list[tuple[int, DeviceReport]] = field(default_factory=list)

    def feed(self, event: object) -> None:
        for eff in self.engine.handle(event, self.now_ms):
            if isinstance(eff, Persist):
                self.persisted.append(eff)
            elif isinstance(eff, Install):
                if eff.site in self.offline_sites or eff.device_id in self.silent:
                    continue
                if eff.download_only:
                    self.downloads.append((self.now_ms, eff))
                    self._due.append((self.now_ms, DeviceReport(eff.device_id, DeviceEvent.DOWNLOADED)))
                else:
                    self.installs.append((self.now_ms, eff))
                    outcome = DeviceEvent.ROLLBACK if eff.device_id in self.bad else DeviceEvent.COMMIT
                    self._due.append((self.now_ms + self.install_ms, DeviceReport(eff.device_id, outcome, "health check")))

    def run(self, until_ms: int, step_ms: int = 1000) -> None:
        while self.now_ms < until_ms:
            self.now_ms += step_ms
            due = [r for t, r in self._due if t <= self.now_ms]
            self._due = [(t, r) for t, r in self._due if t > self.now_ms]
            for r in due:
                self.feed(r)
            self.feed(Tick())


def devices(sites: int, per_site: int, version: str = "1.0.0", hw: str = "board-a") -> list[DeviceInfo]:
    return [DeviceInfo(f"d-{s}-{i:03d}", f"site-{s}", hw, version) for s in range(1, sites + 1) for i in range(per_site)]

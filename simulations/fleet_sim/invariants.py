"""The named invariants every fleet run checks, and the first event that broke each.

Some are checked as the run goes (an install outside its window is caught when it begins), the
rest at the end from the stores and boards themselves (nothing acknowledged lost, every drop a
stored gap, no device bricked). The first violation of each keeps the virtual time and a line
naming the event, so a failing run says where to look, and replaying the seed reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["INVARIANTS", "Invariants", "Violation"]

INVARIANTS = {
    "nothing_acknowledged_lost": "every record a gateway acknowledged to its device is stored at the cloud, "
                                 "or inside a gap the cloud stored",
    "nothing_stored_twice": "no (device, stream, sequence) is stored twice",
    "every_drop_reported": "every range a device buffer or gateway outbox dropped arrived at the cloud as a gap",
    "none_bricked": "every device boots a slot holding a complete image, no slot marked good is torn",
    "none_inconsistent": "no update record left mid-way; the cloud's rollout view matches what each device runs",
    "installs_inside_window": "no install begins while its site's maintenance window is closed",
    "installs_inside_approved_stage": "no device installs before the cloud approved its stage (canary first)",
    "revoked_not_accepted": "no revoked device's records accepted by a gateway after the list reached it",
    "one_wan_transfer_per_release_site": "each release crosses each site's WAN exactly once",
}


@dataclass(frozen=True, slots=True)
class Violation:
    name: str
    virtual_s: float
    event: str


@dataclass
class Invariants:
    start: float
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVARIANTS, 0))
    first: dict[str, Violation] = field(default_factory=dict)

    def fail(self, name: str, now: float, event: str) -> None:
        if name not in INVARIANTS:
            raise KeyError(f"no invariant named {name!r}")
        self.failures[name] += 1
        if name not in self.first:
            self.first[name] = Violation(name, round(now - self.start, 3), event)

    @property
    def failed(self) -> int:
        return sum(1 for n in self.failures.values() if n)

    def table(self) -> list[dict[str, object]]:
        return [{"name": n, "what": INVARIANTS[n], "violations": self.failures[n],
                 "first": (None if n not in self.first else
                           {"virtual_s": self.first[n].virtual_s, "event": self.first[n].event})}
                for n in INVARIANTS]

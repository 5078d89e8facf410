"""The interfaces between the gateway core and its parts that are not plain method calls.

- ``CoreView``: what ``gateway.security.GatewaySecurity`` may ask of the core (the
  core implements it by delegating to its parts): is the cloud session up, which
  device a peer speaks for, every open session, and close one.
- ``Screened``: security's answer to an event: ``handled`` (its effects are the
  whole answer) or not (its effects go first, then the core's own).
- ``Connected``: where a device can be reached now (``DeviceSessions.peer_of``),
  what the command relay delivers by.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from common.effects import Effect

__all__ = ["Connected", "CoreView", "Screened"]


class CoreView(Protocol):
    @property
    def link_up(self) -> bool: ...

    def device_of(self, peer: str) -> str | None: ...

    def open_sessions(self) -> list[tuple[str, str]]: ...

    def close_session(self, peer: str) -> str | None: ...


class Screened(NamedTuple):
    effects: list[Effect]
    handled: bool


class Connected(Protocol):
    def __call__(self, device_id: str) -> str | None: ...

"""Which node id (and site) a CurveZMQ key may say Hello as: the binding a server checks before it honours a Hello.

A server learns each peer's key from its handshake (``PeerKey``, with the name its allowlist gives that key).
``KeyBindings.check(peer, node_id, site)`` then answers None (honour the Hello; the key and the id are now
bound to each other) or the reason to refuse it:

- the allowlist entry of the key names the node: ``<key> <node id>`` or ``<key> <node id> <site>``; a Hello
  as another id, or at another site, is refused;
- a key without a name is bound to the first id (and site) it said Hello as, for as long as the server runs;
- an id, once bound to a key, is refused to every other key but one the allowlist names for that id (an
  operator's rotation or replacement), and its site is refused a change the allowlist does not name.

So one admitted key cannot speak for another node, end its session or take what is queued for it. A peer
whose key the server never learned (no ``PeerKey``: in-process tests) is not checked. Sans-IO, bounded
(``max_entries`` per table, the oldest forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Binding", "KeyBindings", "parse_name"]


@dataclass(frozen=True, slots=True)
class Binding:
    node_id: str
    site: str | None = None  # None: any (a device; or a name that does not say)


def parse_name(name: str) -> Binding | None:
    """The binding an allowlist entry's name states: ``"gw-1"`` or ``"gw-1 site-7"``; None for no name."""
    parts = name.split()
    if not parts:
        return None
    return Binding(parts[0], parts[1] if len(parts) > 1 else None)


class KeyBindings:
    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._peers: OrderedDict[str, tuple[str, str]] = OrderedDict()  # peer -> (key, allowlist name)
        self._by_key: OrderedDict[str, Binding] = OrderedDict()
        self._by_id: OrderedDict[str, tuple[str, str | None]] = OrderedDict()  # node id -> (key, site)
        self.refused = 0

    def peer(self, peer: str, key: str, name: str) -> None:
        """The key ``peer``'s handshake proved, and the name its allowlist entry gives it."""
        self._put(self._peers, peer, (key, name))

    def key_of(self, peer: str) -> str | None:
        found = self._peers.get(peer)
        return None if found is None else found[0]

    def check(self, peer: str, node_id: str, site: str | None = None) -> str | None:
        """None if ``peer`` may say Hello as ``node_id`` (at ``site``), binding them; else why not."""
        found = self._peers.get(peer)
        if found is None:
            return None
        key, name = found
        named = parse_name(name)
        why = self._refusal(key, named, node_id, site)
        if why is not None:
            self.refused += 1
            return why
        self._put(self._by_key, key, Binding(node_id, site))
        self._put(self._by_id, node_id, (key, site if site is not None else self._by_id.get(node_id, ("", None))[1]))
        return None

    def _refusal(self, key: str, named: Binding | None, node_id: str, site: str | None) -> str | None:
        short = key[:8]
        if named is not None:
            if named.node_id != node_id:
                return f"key {short}... is admitted as {named.node_id!r}, not {node_id!r}"
            if named.site is not None and site is not None and named.site != site:
                return f"key {short}... of {node_id!r} is admitted for site {named.site!r}, not {site!r}"
        bound = self._by_key.get(key)
        if bound is not None and named is None:
            if bound.node_id != node_id:
                return f"key {short}... said Hello as {bound.node_id!r} before; it may not speak for {node_id!r}"
        other = self._by_id.get(node_id)
        if other is not None:
            other_key, other_site = other
            if other_key != key and named is None:
                return (f"{node_id!r} is bound to another key ({other_key[:8]}...); name this key for it in the "
                        "allowlist to replace it")
            if other_site is not None and site is not None and other_site != site and (named is None or named.site != site):
                return f"{node_id!r} is at site {other_site!r}; a move to {site!r} is an operator's change (the allowlist)"
        return None

    def _put(self, table: OrderedDict, key: str, value: object) -> None:  # type: ignore[type-arg]
        table.pop(key, None)
        table[key] = value
        while len(table) > self.max_entries:
            table.popitem(last=False)

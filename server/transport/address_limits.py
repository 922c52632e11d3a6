"""Per client address: how many connections are open, and how many are not yet past `hello`.

One address holding thousands of stalled connections (a request head never finished, an upgrade
never followed by `hello`) slowed every other client down. The listener admits each accepted
connection here before reading anything from it; over either cap it answers 503 and closes
(docs/operations.md, "Per-address limits"). A connection is *pending* from its accept until its
`hello` is accepted, or, for plain HTTP, until its request head has been routed to the app.

Addresses are IPs without the port (an IPv4 client on a dual-stack socket counts as its IPv4
address). An address has an entry only while it has a connection open, so the table is bounded
by the open connections. Trio thread only: no locking.
"""

from __future__ import annotations

import ipaddress

from server.ops.metrics import RefusalReason


def address_key(host: str) -> str:
    """The address a peer is counted under: its IP, IPv4-mapped IPv6 written as IPv4."""
    if ":" not in host:
        return host  # IPv4, as the kernel writes it
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:  # not an IP literal: counted as written
        return host
    return host if mapped is None else str(mapped)


class _Counts:
    __slots__ = ("connections", "key", "pending")

    def __init__(self, key: str) -> None:
        self.key = key
        self.connections = 0
        self.pending = 0


_PENDING = 2
_OPEN = 1


class AddressSlot:
    """One admitted connection's place in its address's counts; each is given back once.

    Calling the slot is `leave_pending`, so it can be handed on as a plain callback without a
    bound method per connection (memory per idle connection is a target).
    """

    __slots__ = ("_counts", "_limits", "_state")

    def __init__(self, limits: AddressLimits, counts: _Counts) -> None:
        self._limits = limits
        self._counts = counts
        self._state = _OPEN | _PENDING

    def leave_pending(self) -> None:
        """The connection is past `hello` (or is plain HTTP being served): no longer pending."""
        if self._state & _PENDING:
            self._state &= ~_PENDING
            self._counts.pending -= 1
            self._limits.pending -= 1

    __call__ = leave_pending

    def release(self) -> None:
        """The connection is over: give back both counts (idempotent)."""
        if not self._state & _OPEN:
            return
        self.leave_pending()
        self._state = 0
        counts = self._counts
        counts.connections -= 1
        self._limits.connections -= 1
        if not counts.connections:
            self._limits._forget(counts.key)


class AddressLimits:
    """Caps per address; 0 means no cap. `connections` and `pending` are the totals."""

    def __init__(self, max_connections: int, max_pending: int) -> None:
        self._max_connections = max_connections
        self._max_pending = max_pending
        self._by_address: dict[str, _Counts] = {}
        self.connections = 0
        self.pending = 0

    def admit(self, host: str) -> AddressSlot | RefusalReason:
        """A slot for a new connection from `host`, or why it is refused (nothing is counted)."""
        key = address_key(host)
        counts = self._by_address.get(key)
        if counts is None:
            counts = self._by_address[key] = _Counts(key)  # caps are >= 1: this one is admitted
        elif self._max_connections and counts.connections >= self._max_connections:
            return "per_address"
        elif self._max_pending and counts.pending >= self._max_pending:
            return "pending_per_address"
        counts.connections += 1
        counts.pending += 1
        self.connections += 1
        self.pending += 1
        return AddressSlot(self, counts)

    def _forget(self, key: str) -> None:
        """Drop `key`'s entry (its last connection is gone)."""
        self._by_address.pop(key, None)

    def __len__(self) -> int:
        """Addresses with at least one open connection."""
        return len(self._by_address)

"""AddressLimits: per-address counts of open and of pending connections, and their caps."""

from __future__ import annotations

import pytest

from server.transport.address_limits import AddressLimits, AddressSlot, address_key


def _admitted(limits: AddressLimits, host: str) -> AddressSlot:
    slot = limits.admit(host)
    assert isinstance(slot, AddressSlot), slot
    return slot


def test_the_connection_over_the_cap_is_refused_until_one_is_released() -> None:
    limits = AddressLimits(max_connections=3, max_pending=0)
    slots = [_admitted(limits, "10.0.0.1") for _ in range(3)]
    assert limits.admit("10.0.0.1") == "per_address"
    _admitted(limits, "10.0.0.2")  # another address has its own count
    slots[0].release()
    _admitted(limits, "10.0.0.1")
    assert limits.connections == 4


def test_a_connection_past_hello_stops_counting_as_pending() -> None:
    limits = AddressLimits(max_connections=0, max_pending=2)
    first, _second = _admitted(limits, "10.0.0.1"), _admitted(limits, "10.0.0.1")
    assert limits.admit("10.0.0.1") == "pending_per_address"
    first.leave_pending()
    first.leave_pending()  # idempotent: the slot is given back once
    _admitted(limits, "10.0.0.1")
    assert limits.admit("10.0.0.1") == "pending_per_address"
    assert (limits.connections, limits.pending) == (3, 2)


def test_the_connection_cap_counts_connections_past_hello_too() -> None:
    limits = AddressLimits(max_connections=2, max_pending=1)
    _admitted(limits, "10.0.0.1").leave_pending()
    _admitted(limits, "10.0.0.1").leave_pending()
    assert limits.admit("10.0.0.1") == "per_address"


def test_releasing_every_slot_forgets_the_address() -> None:
    limits = AddressLimits(max_connections=5, max_pending=5)
    slots = [_admitted(limits, f"10.0.0.{i % 3}") for i in range(9)]
    slots[0].leave_pending()
    for slot in slots:
        slot.release()
        slot.release()  # idempotent
    assert (limits.connections, limits.pending, len(limits)) == (0, 0, 0)


def test_calling_a_slot_leaves_pending() -> None:
    limits = AddressLimits(max_connections=0, max_pending=1)
    slot = _admitted(limits, "10.0.0.1")
    slot()
    assert (limits.connections, limits.pending) == (1, 0)


def test_zero_means_no_cap() -> None:
    limits = AddressLimits(max_connections=0, max_pending=0)
    for _ in range(10_000):
        _admitted(limits, "127.0.0.1")
    assert limits.connections == 10_000


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 on a dual-stack socket is the same address
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_addresses_are_counted_by_ip(host: str, key: str) -> None:
    assert address_key(host) == key


def test_an_ipv4_client_counts_the_same_on_a_dual_stack_socket() -> None:
    limits = AddressLimits(max_connections=1, max_pending=0)
    _admitted(limits, "192.0.2.7")
    assert limits.admit("::ffff:192.0.2.7") == "per_address"

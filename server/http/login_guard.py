"""What login and register go through before their password hashing: the throttle, then a slot.

An attempt is refused (429 `too_many_attempts`, with `Retry-After`) when the throttle says so,
checked before it queues for a KDF slot and again once it has one (failures may have landed
while it waited); so at most one KDF per slot runs past a limit. Slots are shared round-robin by
client (`FairLimiter`), so a flood from one client cannot delay another's login by more than
a turn.

The client is the socket's peer address, or, when the peer is one of `trusted_proxies`, the
address the proxy put in `X-Forwarded-For`, read from the right: entries further left were
written by the client and can say anything. An IPv6 client is keyed by its /64, which one host
usually has to itself.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import trio
from quart import Request

from protocol import ErrorCode
from server.config import Config
from server.http._json import HttpError
from server.http.fair_limiter import FairLimiter, QueueFull
from server.http.login_throttle import LoginThrottle

# As many as the store's own KDF limiter has, so the store never queues behind these.
KDF_SLOTS = os.cpu_count() or 1
MAX_WAITING_PER_CLIENT = 32
UNKNOWN_CLIENT = "unknown"  # no peer address (not a TCP socket): all such requests share one

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]

_MESSAGES = {
    "address": "too many failed logins from this address",
    "account": "too many failed logins for this account from an address that has failed",
    "queue": "too many logins in progress from this address",
}


class LoginGuard:
    """The throttle and the fair KDF slots, as the HTTP handlers use them."""

    def __init__(
        self,
        throttle: LoginThrottle,
        slots: FairLimiter,
        trusted_proxies: Networks = (),
        on_refused: Callable[[str], None] = lambda limit: None,
    ) -> None:
        self._throttle = throttle
        self._slots = slots
        self._trusted = tuple(trusted_proxies)
        self._on_refused = on_refused  # told "address", "account" or "queue" per 429

    @classmethod
    def from_config(
        cls, config: Config, on_refused: Callable[[str], None] = lambda limit: None
    ) -> LoginGuard:
        throttle = LoginThrottle(
            address_limit=config.accounts.login_address_limit,
            address_window=config.accounts.login_address_window,
            address_backoff=config.accounts.login_address_backoff,
            account_limit=config.accounts.login_account_limit,
            account_window=config.accounts.login_account_window,
            clock=trio.current_time,
        )
        proxies = [ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies]
        return cls(throttle, FairLimiter(KDF_SLOTS, MAX_WAITING_PER_CLIENT), proxies, on_refused)

    def client_of(self, request: Request) -> str:
        """The throttle key of the client that sent `request`."""
        # The peer from the ASGI scope, as the socket gave it (quart's remote_addr reads a header).
        peer = request.scope.get("client")
        forwarded = request.headers.getlist("X-Forwarded-For")
        return resolve_client(peer[0] if peer else None, forwarded, self._trusted)

    @asynccontextmanager
    async def attempt(self, client: str, account: str | None) -> AsyncIterator[None]:
        """Run the block (the KDF) if the throttle allows, in `client`'s turn; else `HttpError` 429.

        `account` is the name a login is for; None for a registration (the address rule only).
        """
        self._check(client, account)
        try:
            await self._slots.acquire(client)
        except QueueFull:
            raise self._refused("queue", 1.0) from None
        try:
            self._check(client, account)
            yield
        finally:
            self._slots.release()

    def failed(self, client: str, account: str | None) -> None:
        self._throttle.failed(client, account)

    def succeeded(self, account: str) -> None:
        self._throttle.succeeded(account)

    def _check(self, client: str, account: str | None) -> None:
        refusal = self._throttle.refusal(client, account)
        if refusal is not None:
            raise self._refused(refusal.limit, refusal.retry_after)

    def _refused(self, limit: str, retry_after: float) -> HttpError:
        self._on_refused(limit)
        seconds = max(1, math.ceil(retry_after))
        return HttpError(
            429,
            ErrorCode.TOO_MANY_ATTEMPTS,
            f"{_MESSAGES[limit]}; retry in {seconds} s",
            {"Retry-After": str(seconds)},
        )


def resolve_client(peer: str | None, forwarded_for: Sequence[str], trusted: Networks) -> str:
    """The throttle key of the client a request comes from (see the module docstring)."""
    if peer is None:
        return UNKNOWN_CLIENT
    client = _parse(peer)
    if client is None or not _is_trusted(client, trusted):
        return client_key(peer)
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break  # unreadable: keep the last hop that could be read
        client = address
        if not _is_trusted(address, trusted):
            break
    return client_key(str(client))


def client_key(address: str) -> str:
    """`address` as a throttle key: IPv4 as is, IPv6 as its /64 (IPv4-mapped as the IPv4)."""
    parsed = _parse(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def _parse(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Networks) -> bool:
    return any(address in network for network in trusted)

"""What a load run connects: rooms, receiver and sender connections, accounts (for hibiki, over
its HTTP API), source addresses, and the checks that keep the load on this machine."""

from __future__ import annotations

import ipaddress
import math
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

PROTOCOLS = ("hibiki", "websockets", "socketio", "firehose")
PATHS = {
    "hibiki": "/ws",
    "websockets": "/",
    "socketio": "/socket.io/?EIO=4&transport=websocket",
    "firehose": "/",
}
PASSWORD = "loadgen-password"
CONNS_PER_SOURCE = 16_000  # well under the 28k ephemeral ports of one source address


class PlanError(ValueError):
    """The requested run cannot be made (bad URL, non-loopback target, setup refused)."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Target:
        """`ws://HOST:PORT[/...]` or `http://...`; refuses any host that is not loopback."""
        parts = urlsplit(url if "://" in url else f"ws://{url}")
        if parts.hostname is None or parts.port is None:
            raise PlanError(f"{url!r}: give host and port, e.g. ws://127.0.0.1:8080")
        for info in socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM):
            address = ipaddress.ip_address(info[4][0])
            if not address.is_loopback:
                raise PlanError(f"{url!r}: refusing a non-loopback target ({address})")
        return cls(parts.hostname, parts.port)

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Workload:
    """`receivers` connections in `rooms` (round robin) and `senders` more that only send; with
    `chatty`, every one of the `receivers` also sends to its own room (and `senders` is 0)."""

    receivers: int
    rooms: int = 1
    senders: int = 1
    chatty: bool = False

    def __post_init__(self) -> None:
        if self.rooms < 1 or self.senders < 0 or self.receivers < 0:
            raise PlanError("need rooms >= 1, senders >= 0, receivers >= 0")
        if self.chatty and (self.senders != 0 or self.receivers < self.rooms):
            raise PlanError("chatty rooms: senders = 0 and at least one connection per room")

    def label(self) -> str:
        if self.chatty:
            return f"chatty {self.rooms}x{self.receivers // self.rooms}"
        if self.rooms == 1:
            return f"N={self.receivers} S={self.senders}"
        per_room = self.receivers // self.rooms
        return f"{self.rooms}x{per_room} S={self.senders}"


def sender_rooms(sender: int, rooms: int, senders: int) -> list[int]:
    """Rooms a sender posts to, round robin: every room gets a sender, every sender a room."""
    if rooms >= senders:
        return list(range(sender, rooms, senders))
    return [sender % rooms]


def source_addresses(connections: int, wanted: int | None) -> list[str | None]:
    """127.0.0.x source addresses to spread `connections` over (None: let the kernel choose)."""
    count = wanted if wanted is not None else math.ceil(connections / CONNS_PER_SOURCE)
    if count <= 1:
        return [None]
    if count > 254:
        raise PlanError("at most 254 source addresses (127.0.0.1 .. 127.0.0.254)")
    return [f"127.0.0.{1 + i}" for i in range(count)]


def receiver_target(index: int, rooms: int, targets: int) -> int:
    """Which target receiver `index` connects to: each room's receivers alternate over the
    targets (receiver i is in room i % rooms), so every room is split evenly across them."""
    return (index // rooms) % targets


@dataclass
class Plan:
    """Connection specs handed to the Node workers, and what each room should receive.

    `targets` are the server processes receivers connect to (each spec's `target` is an index);
    senders always use the first, so deliveries to the others cross processes."""

    protocol: str
    rooms: list[str]
    receivers: list[dict[str, Any]] = field(default_factory=list)
    senders: list[dict[str, Any]] = field(default_factory=list)
    receivers_per_room: dict[str, int] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    targets: list[Target] = field(default_factory=list)

    def receiving(self) -> int:
        """Connections that count deliveries: the receivers and the senders that also receive."""
        return len(self.receivers) + sum(1 for spec in self.senders if spec.get("receives"))

    def expected_deliveries(self, sent_per_room: dict[str, int]) -> int:
        return sum(n * self.receivers_per_room.get(room, 0) for room, n in sent_per_room.items())


class Accounts:
    """hibiki accounts made over HTTP: one or more per room for receivers, one per sender."""

    def __init__(self, target: Target, run_id: str, concurrency: int = 16) -> None:
        self._target = target
        self._run_id = run_id
        self._limit = trio.CapacityLimiter(concurrency)
        self._count = 0

    async def register(self, client: httpx.AsyncClient) -> str:
        self._count += 1
        name = f"lg{self._run_id}u{self._count}"
        async with self._limit:
            response = await client.post("/api/register", json={"name": name, "password": PASSWORD})
        if response.status_code != 201:
            raise PlanError(f"register {name}: {response.status_code} {response.text[:200]}")
        token: str = response.json()["token"]
        return token

    async def create_room(self, client: httpx.AsyncClient, token: str, room: str) -> None:
        async with self._limit:
            response = await client.post(
                "/api/rooms", json={"name": room}, headers={"Authorization": f"Bearer {token}"}
            )
        if response.status_code != 201:
            raise PlanError(f"create room {room}: {response.status_code} {response.text[:200]}")

    async def join(self, client: httpx.AsyncClient, token: str, room: str) -> None:
        async with self._limit:
            response = await client.post(
                f"/api/rooms/{room}/join", headers={"Authorization": f"Bearer {token}"}
            )
        if response.status_code != 200:
            raise PlanError(f"join {room}: {response.status_code} {response.text[:200]}")


async def _gather_tokens(accounts: Accounts, client: httpx.AsyncClient, count: int) -> list[str]:
    tokens: list[str] = [""] * count

    async def one(i: int) -> None:
        tokens[i] = await accounts.register(client)

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return tokens


async def _hibiki_accounts(
    target: Target, plan: Plan, senders: int, per_room: int, http_timeout: float
) -> tuple[list[list[str]], list[str]]:
    """Register accounts, create the rooms, join; returns (tokens per room, sender tokens)."""
    accounts = Accounts(target, plan.run_id)
    rooms = plan.rooms
    async with httpx.AsyncClient(base_url=target.http, timeout=http_timeout) as client:
        flat = await _gather_tokens(accounts, client, len(rooms) * per_room + senders)
        room_tokens = [flat[r * per_room : (r + 1) * per_room] for r in range(len(rooms))]
        sender_tokens = flat[len(rooms) * per_room :]
        async with trio.open_nursery() as nursery:
            for r, room in enumerate(rooms):
                nursery.start_soon(accounts.create_room, client, room_tokens[r][0], room)
        async with trio.open_nursery() as nursery:
            for r, room in enumerate(rooms):
                for token in room_tokens[r][1:]:
                    nursery.start_soon(accounts.join, client, token, room)
            for k, token in enumerate(sender_tokens):
                for r in sender_rooms(k, len(rooms), senders):
                    nursery.start_soon(accounts.join, client, token, rooms[r])
    return room_tokens, sender_tokens


async def make_plan(
    protocol: str,
    target: Target,
    workload: Workload,
    *,
    accounts_per_room: int = 1,
    sources: int | None = None,
    setup_timeout: float = 120,
    targets: Sequence[Target] = (),
) -> Plan:
    """Rooms, accounts (hibiki, over `target`'s HTTP API) and the connection specs for
    `workload`; receivers are split over `targets` (default: `target` alone)."""
    if protocol not in PROTOCOLS:
        raise PlanError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    plan = Plan(protocol, [], targets=list(targets) or [target])
    plan.rooms = [f"lg{plan.run_id}-{r}" for r in range(workload.rooms)]
    room_tokens: list[list[str]] = [[""] for _ in plan.rooms]
    sender_tokens = [""] * workload.senders
    if protocol == "hibiki":
        room_tokens, sender_tokens = await _hibiki_accounts(
            target, plan, workload.senders, accounts_per_room, setup_timeout
        )
    addresses = source_addresses(workload.receivers + workload.senders, sources)
    if workload.chatty:
        _chatty_connections(plan, workload, room_tokens, addresses)
        return plan
    for i in range(workload.receivers):
        r = i % workload.rooms
        room = plan.rooms[r]
        tokens = room_tokens[r]
        plan.receivers.append(
            {
                "rooms": [room],
                "token": tokens[(i // workload.rooms) % len(tokens)],
                "src": addresses[i % len(addresses)],
                "target": receiver_target(i, workload.rooms, len(plan.targets)),
            }
        )
        plan.receivers_per_room[room] = plan.receivers_per_room.get(room, 0) + 1
    for k in range(workload.senders):
        mine = [plan.rooms[r] for r in sender_rooms(k, workload.rooms, workload.senders)]
        plan.senders.append(
            {
                "rooms": mine,
                "token": sender_tokens[k],
                "src": None,
                "target": 0,
                "sender": {"sid": k + 1, "rooms": mine},
            }
        )
    return plan


def _chatty_connections(
    plan: Plan, workload: Workload, room_tokens: list[list[str]], addresses: list[str | None]
) -> None:
    """Every connection a sender to its own room that also receives (its own echo included),
    laid out over rooms, accounts, addresses and targets as receivers are."""
    for i in range(workload.receivers):
        room = plan.rooms[i % workload.rooms]
        tokens = room_tokens[i % workload.rooms]
        plan.senders.append(
            {
                "rooms": [room],
                "token": tokens[(i // workload.rooms) % len(tokens)],
                "src": addresses[i % len(addresses)],
                "target": receiver_target(i, workload.rooms, len(plan.targets)),
                "sender": {"sid": i + 1, "rooms": [room]},
                "receives": True,
            }
        )
        plan.receivers_per_room[room] = plan.receivers_per_room.get(room, 0) + 1


def more_receivers(plan: Plan, count: int, addresses: list[str | None]) -> list[dict[str, Any]]:
    """Specs for `count` more receivers, continuing the round robin over the plan's rooms and
    reusing each room's receiver accounts (for `LoadSession.add_receivers`)."""
    tokens: dict[str, list[str]] = {}
    for spec in plan.receivers:
        tokens.setdefault(spec["rooms"][0], [])
        if spec["token"] not in tokens[spec["rooms"][0]]:
            tokens[spec["rooms"][0]].append(spec["token"])
    start = len(plan.receivers)
    specs = []
    for i in range(start, start + count):
        room = plan.rooms[i % len(plan.rooms)]
        room_tokens = tokens.get(room) or [""]
        specs.append(
            {
                "rooms": [room],
                "token": room_tokens[(i // len(plan.rooms)) % len(room_tokens)],
                "src": addresses[i % len(addresses)],
                "target": receiver_target(i, len(plan.rooms), len(plan.targets) or 1),
            }
        )
    return specs

"""One read replica's health as the router sees it: usable, lagging, down, or not yet probed.

A replica is used only while its last probe succeeded with a lag within the bound. A read that
fails (connection error, timeout) marks it down at once, so the next read goes to the primary
without waiting for the prober; only a successful probe brings it back. Probes of a down replica
back off exponentially (interval, 2x, 4x, ... up to `max_backoff`), so a dead host costs one
connection attempt per backoff, not one per read.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Protocol

import trio

from protocol import Message, RoomEntry
from storage.protocols import ReplicaLag, StorageError


class ReplicaReads(Protocol):
    """What the router reads from a replica: pages with the room's last_seq, and a lag probe."""

    async def open(self) -> None:
        """Start connecting, without waiting: a replica down at start must not stop the server."""

    async def aclose(self) -> None: ...

    async def history_and_last_seq(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[int, tuple[list[Message], bool]]:
        """The room's last_seq there, then `MessageStore.history` (a snapshot no older), in
        one round trip; `NotFound` if the room is not there."""

    async def messages_after_and_last_seq(
        self, room: str, after_seq: int, limit: int
    ) -> tuple[int, list[RoomEntry]]:
        """The room's last_seq there, then `MessageStore.messages_after`, likewise."""

    async def replica_lag(self) -> ReplicaLag:
        """The lag now; `StorageError` if the replica cannot be reached."""


class State(enum.Enum):
    UNKNOWN = "unknown"  # not probed yet: not used
    UP = "up"
    LAGGING = "lagging"  # reachable, but further behind than the bound: not used
    DOWN = "down"  # unreachable or failing: not used, re-probed on a backoff


@dataclass(frozen=True, slots=True)
class ProbePolicy:
    """Seconds: between probes, each probe's and each read's bound, and the largest backoff;
    `max_lag`: seconds of lag beyond which a replica is skipped."""

    interval: float = 1.0
    timeout: float = 2.0
    max_backoff: float = 30.0
    max_lag: float = 5.0


class ReplicaHealth:
    """One replica: its reads, its state, its last lag and error; updated on the trio thread."""

    def __init__(self, name: str, reads: ReplicaReads, policy: ProbePolicy) -> None:
        self.name = name  # for metrics and status: host:port/db, never credentials
        self.reads = reads
        self.policy = policy
        self._state = State.UNKNOWN
        self._changed = trio.Event()
        self.lag: ReplicaLag | None = None
        self.error = ""
        self.failures = 0  # consecutive failed probes and reads
        self.reads_served = 0

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            self._changed.set()
            self._changed = trio.Event()

    @property
    def usable(self) -> bool:
        return self._state is State.UP

    async def wait_until(self, state: State) -> None:
        """Return once the replica is in `state` (operators' tools and tests)."""
        while self._state is not state:
            await self._changed.wait()

    def read_failed(self, error: str) -> None:
        """A read failed: skip this replica until a probe succeeds."""
        self.state = State.DOWN
        self.error = error
        self.failures += 1

    async def probe(self) -> None:
        """Measure the lag now and set the state from it."""
        try:
            with trio.fail_after(self.policy.timeout):
                lag = await self.reads.replica_lag()
        except (StorageError, trio.TooSlowError) as exc:
            self.read_failed(describe(exc))
            return
        self.lag = lag
        self.failures = 0
        self.error = ""
        self.state = State.UP if lag.seconds <= self.policy.max_lag else State.LAGGING

    def next_probe_in(self) -> float:
        """Seconds until the next probe: the interval, or the backoff while down."""
        if self.state is not State.DOWN:
            return self.policy.interval
        backoff = self.policy.interval * 2.0 ** min(self.failures - 1, 30)
        return min(backoff, self.policy.max_backoff)

    async def run(self) -> None:
        """Probe now, then forever on the schedule above."""
        while True:
            await self.probe()
            await trio.sleep(self.next_probe_in())

    def status(self) -> dict[str, object]:
        """For readiness JSON: name, state, lag and the last error."""
        lag = self.lag
        out: dict[str, object] = {"name": self.name, "state": self.state.value}
        if lag is not None and math.isfinite(lag.seconds):
            out["lag_seconds"] = round(lag.seconds, 3)
            out["lag_bytes"] = lag.bytes
        if self.error:
            out["error"] = self.error
        return out


def describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__

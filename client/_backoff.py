"""Reconnect delays: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before reconnect attempt `n` (0-based): with `cap = min(maximum, initial * factor**n)`,
    a uniformly random delay in `[cap / 2, cap]` ("equal jitter").

    The delay doubles (by default) with each failed attempt, so a dead server is not hammered,
    and the jitter spreads out clients that lost the same server at the same moment. A client
    resets `n` to 0 once a connection is accepted (`welcome`).
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.factor >= 1):
            raise ValueError("Backoff needs 0 < initial <= maximum and factor >= 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number `attempt` (0 = the first retry)."""
        cap = min(self.maximum, self.initial * self.factor ** min(max(attempt, 0), 64))
        return (rng or random).uniform(cap / 2, cap)

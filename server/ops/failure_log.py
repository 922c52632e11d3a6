"""Logging a failure that repeats many times a second without flooding the log.

A full disk fails every message batch (hundreds a second): a traceback for each would bury
everything else in the log and cost more than the failure itself. `RepeatedFailureLog` logs each
kind of failure once with its traceback, then a count per interval while failures go on, and one
line when the operation succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 10.0  # seconds between "still failing" summaries
MAX_KINDS = 32  # distinct failures logged in full per outage; later new kinds are only counted


class RepeatedFailureLog:
    """One operation's failures, logged as an outage rather than line by line.

    `failed(exc, ...)` logs the first failure of a kind (same exception type and message) at
    ERROR with its traceback, and later ones not at all: instead, the first failure after
    `interval` seconds logs one ERROR line with how many failed since the last line. `succeeded()`
    ends the outage with one WARNING line giving the total, and a later failure of any kind is
    logged in full again. `what` names the operation in plural ("message batches").

    Not thread-safe: call it from one thread (the trio thread). `clock` is for tests.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        recovered: str = "succeeding again",
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._what = what
        self._recovered = recovered
        self._interval = interval
        self._clock = clock
        self._kinds: set[tuple[type[BaseException], str]] = set()
        self.failures = 0  # in the current outage (0: none going on)
        self._unreported = 0  # failures not logged since the last line
        self._reported_at = 0.0

    def failed(self, exc: BaseException, message: str, *args: object) -> None:
        """Record a failure; `message % args` is what is logged for the first of its kind."""
        now = self._clock()
        if not self.failures:
            self._reported_at = now
        self.failures += 1
        kind = (type(exc), str(exc))
        if kind not in self._kinds and len(self._kinds) < MAX_KINDS:
            self._kinds.add(kind)
            self._logger.error(message, *args, exc_info=exc)
            return
        self._unreported += 1
        elapsed = now - self._reported_at
        if elapsed >= self._interval:
            self._logger.error(
                "%s still failing: %d in the last %.0f s",
                self._what,
                self._unreported,
                elapsed,
                extra={"failures": self._unreported, "seconds": round(elapsed, 1)},
            )
            self._unreported = 0
            self._reported_at = now

    def succeeded(self) -> None:
        """The operation worked: ends an outage (one line) or does nothing."""
        if not self.failures:
            return
        self._logger.warning(
            "%s %s after %d failures",
            self._what,
            self._recovered,
            self.failures,
            extra={"failures": self.failures},
        )
        self.failures = 0
        self._unreported = 0
        self._kinds.clear()

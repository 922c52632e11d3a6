"""Log a recurring condition once, then only how often it recurred.

A failure that repeats many times a second (accept failing with EMFILE at the descriptor limit, a
commit failing on a full disk) would otherwise fill the log and bury everything else in it:

    throttle = LogThrottle(_log, "accept failed")
    ...
    except OSError as exc:
        throttle.occurred(errno.errorcode.get(exc.errno, "other"), str(exc))
    ...
    throttle.recovered()  # after the next success

The first occurrence of each condition is a warning with its detail; repeats are counted, and
the count is logged ("accept failed 150 more times in the last 10 s (EMFILE)") at most once per
`interval`, when the condition recurs, and once more when the caller says it recovered. After a
recovery the next occurrence is logged in full again. Conditions are the caller's keys and must
come from a small fixed set (errno names, say): one entry each while it is failing.
Not thread-safe: use one from one thread (the trio thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class _Episode:
    __slots__ = ("repeats", "since")

    def __init__(self, since: float) -> None:
        self.repeats = 0  # occurrences not yet reported
        self.since = since  # when the last line about this condition was logged


class LogThrottle:
    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._interval = interval
        self._clock = clock
        self._failing: dict[str, _Episode] = {}

    def occurred(self, condition: str, detail: str) -> None:
        """`condition` happened (again): a warning the first time, else counted."""
        now = self._clock()
        episode = self._failing.get(condition)
        if episode is None:
            self._failing[condition] = _Episode(now)
            self._log.warning("%s: %s", self._what, detail, extra={"condition": condition})
            return
        episode.repeats += 1
        if now - episode.since >= self._interval:
            self._summarise(condition, episode, now, "")

    def recovered(self) -> None:
        """The operation succeeded: report the repeats not yet logged, and forget every
        condition. Cheap when nothing was failing (callers may call it on every success)."""
        if not self._failing:
            return
        now = self._clock()
        for condition, episode in self._failing.items():
            if episode.repeats:
                self._summarise(condition, episode, now, ", then recovered")
            else:
                self._log.info(
                    "%s (%s): recovered", self._what, condition, extra={"condition": condition}
                )
        self._failing.clear()

    def _summarise(self, condition: str, episode: _Episode, now: float, tail: str) -> None:
        seconds = round(now - episode.since, 1)
        self._log.warning(
            "%s %d more %s in the last %g s (%s)%s",
            self._what,
            episode.repeats,
            "time" if episode.repeats == 1 else "times",
            seconds,
            condition,
            tail,
            extra={"condition": condition, "repeats": episode.repeats, "seconds": seconds},
        )
        episode.repeats = 0
        episode.since = now

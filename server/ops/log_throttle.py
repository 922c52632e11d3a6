"""Log a recurring condition once, then only how often it recurred.

A failure that repeats many times a second (accept failing with EMFILE at the descriptor limit, a
commit failing on a full disk) would otherwise fill the log, and its tracebacks cost more than
the failure itself:

    throttle = LogThrottle(_log, "accept failed")
    ...
    except OSError as exc:
        throttle.occurred(errno.errorcode.get(exc.errno, "other"), "accept failed: %s", exc)
    ...
    throttle.recovered()  # after the next success

The first occurrence of each condition is logged in full (`first_level`, with the exception's
traceback if `traceback`); repeats are counted, and the count is logged at most once per
`interval`, when the condition recurs, and once more when the caller says it recovered. After a
recovery the next occurrence is logged in full again. Conditions are the caller's keys (errno
names, an exception's type and message); past `MAX_CONDITIONS` at once, new ones are counted
under `OTHER` without a line of their own. What the count and recovery lines say is `wording`
(`COUNTED` by default; the writer says "still failing" and "stored again"). Not thread-safe:
use one from one thread (the trio thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_INTERVAL = 10.0  # seconds between two count lines of one condition
MAX_CONDITIONS = 32  # conditions logged in full at once; later new ones are only counted
OTHER = "other"  # the condition those are counted under


@dataclass(frozen=True)
class Line:
    """One kind of line: `text` %-formats the values by name, `fields` maps each structured field
    it carries to the value it takes. Values: `what`, `condition`, `repeats` (not yet reported),
    `times` ("time"/"times"), `seconds` (since the last line, to 0.1 s), `elapsed` (unrounded),
    `failures` (occurrences of the condition since it began)."""

    level: int
    text: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Wording:
    """What a `LogThrottle` says after a condition's first line."""

    repeated: Line  # while it lasts, at most once per interval
    recovered: Line  # at recovery, when there are repeats not yet reported
    recovered_quiet: Line  # at recovery, when there are none
    first_fields: tuple[str, ...] = ("condition",)  # the first line's structured fields
    one_count: bool = False  # count every condition as one (the writer's outage), not each


_COUNT = "%(what)s %(repeats)d more %(times)s in the last %(seconds)g s (%(condition)s)"
_COUNT_FIELDS = {"condition": "condition", "repeats": "repeats", "seconds": "seconds"}
COUNTED = Wording(
    repeated=Line(logging.WARNING, _COUNT, _COUNT_FIELDS),
    recovered=Line(logging.WARNING, _COUNT + ", then recovered", _COUNT_FIELDS),
    recovered_quiet=Line(
        logging.INFO, "%(what)s (%(condition)s): recovered", {"condition": "condition"}
    ),
)


class _Episode:
    __slots__ = ("failures", "repeats", "since")

    def __init__(self, since: float) -> None:
        self.failures = 0  # occurrences since the condition began
        self.repeats = 0  # occurrences not yet reported
        self.since = since  # when the last line about this condition was logged


class LogThrottle:
    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        first_level: int = logging.WARNING,
        traceback: bool = False,
        wording: Wording = COUNTED,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._what = what
        self._first_level = first_level
        self._traceback = traceback
        self._wording = wording
        self._interval = interval
        self._clock = clock
        self._logged: set[str] = set()  # conditions logged in full since the last recovery
        self._failing: dict[str, _Episode] = {}  # by condition, or all under "" (`one_count`)

    @property
    def failures(self) -> int:
        """Occurrences since the last recovery, of every condition (0: nothing is failing)."""
        return sum(episode.failures for episode in self._failing.values())

    def occurred(
        self, condition: str, message: str, *args: object, exc: BaseException | None = None
    ) -> None:
        """`condition` happened (again): `message % args` is logged the first time (with `exc`'s
        traceback if the throttle logs tracebacks), later times only counted."""
        now = self._clock()
        first = condition not in self._logged and len(self._logged) < MAX_CONDITIONS
        if not first and condition not in self._logged:
            condition = OTHER
        key = "" if self._wording.one_count else condition
        episode = self._failing.get(key)
        if episode is None:
            episode = self._failing[key] = _Episode(now)
        episode.failures += 1
        if first:
            self._logged.add(condition)
            extra = {name: condition for name in self._wording.first_fields}
            exc_info = exc if self._traceback else None
            self._log.log(self._first_level, message, *args, exc_info=exc_info, extra=extra)
            return
        episode.repeats += 1
        if now - episode.since >= self._interval:
            self._say(self._wording.repeated, key, episode, now)
            episode.repeats = 0
            episode.since = now

    def recovered(self) -> None:
        """The operation succeeded: one line per condition that was failing (one in all with
        `one_count`), then forget them. Cheap when nothing was failing (callers may call it on
        every success)."""
        if not self._failing:
            return
        now = self._clock()
        wording = self._wording
        for condition, episode in self._failing.items():
            line = wording.recovered if episode.repeats else wording.recovered_quiet
            self._say(line, condition, episode, now)
        self._failing.clear()
        self._logged.clear()

    def _say(self, line: Line, condition: str, episode: _Episode, now: float) -> None:
        elapsed = now - episode.since
        values: dict[str, object] = {
            "what": self._what,
            "condition": condition,
            "repeats": episode.repeats,
            "times": "time" if episode.repeats == 1 else "times",
            "seconds": round(elapsed, 1),
            "elapsed": elapsed,
            "failures": episode.failures,
        }
        extra = {field: values[value] for field, value in line.fields.items()}
        self._log.log(line.level, line.text, values, extra=extra)

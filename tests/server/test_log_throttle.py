"""LogThrottle: a recurring condition is logged once, then counted, with a fake clock."""

from __future__ import annotations

import logging

import pytest

from server.ops.log_throttle import LogThrottle

LOGGER = "test.log_throttle"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttle(clock: FakeClock) -> LogThrottle:
    return LogThrottle(logging.getLogger(LOGGER), "accept failed", interval=10.0, clock=clock)


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_the_first_occurrence_is_logged_and_repeats_are_only_counted(
    throttle: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    for _ in range(150):  # 15 a second for 10 s would be 150 lines
        throttle.occurred("EMFILE", "[Errno 24] Too many open files")
        clock.now += 0.05
    assert _lines(caplog) == [(logging.WARNING, "accept failed: [Errno 24] Too many open files")]
    first = next(r for r in caplog.records if r.name == LOGGER)
    assert first.__dict__["condition"] == "EMFILE"


def test_repeats_are_summarised_at_most_once_per_interval(
    throttle: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.occurred("EMFILE", "too many")  # logged; its window starts at 100
    for _ in range(80):  # 80 repeats over 100.125 .. 110.0 (steps exact in binary)
        clock.now += 0.125
        throttle.occurred("EMFILE", "too many")
    for _ in range(5):  # within the next window: counted only
        clock.now += 0.125
        throttle.occurred("EMFILE", "too many")
    assert _lines(caplog) == [
        (logging.WARNING, "accept failed: too many"),
        (logging.WARNING, "accept failed 80 more times in the last 10 s (EMFILE)"),
    ]
    summary = [r for r in caplog.records if r.name == LOGGER][1]
    assert (summary.__dict__["repeats"], summary.__dict__["seconds"]) == (80, 10.0)


def test_recovery_reports_the_uncounted_repeats_and_rearms(
    throttle: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.recovered()  # nothing was failing: nothing to say
    throttle.occurred("EMFILE", "too many")
    clock.now += 1.0
    throttle.occurred("EMFILE", "too many")
    clock.now += 1.0
    throttle.occurred("EMFILE", "too many")
    clock.now += 1.0
    throttle.recovered()
    throttle.recovered()  # once only
    throttle.occurred("EMFILE", "too many again")  # a new episode: logged again
    assert _lines(caplog) == [
        (logging.WARNING, "accept failed: too many"),
        (logging.WARNING, "accept failed 2 more times in the last 3 s (EMFILE), then recovered"),
        (logging.WARNING, "accept failed: too many again"),
    ]


def test_recovery_without_repeats_is_logged_at_info(
    throttle: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.occurred("ENOBUFS", "no buffer space")
    throttle.recovered()
    assert _lines(caplog) == [
        (logging.WARNING, "accept failed: no buffer space"),
        (logging.INFO, "accept failed (ENOBUFS): recovered"),
    ]


def test_each_condition_is_logged_and_counted_on_its_own(
    throttle: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.occurred("EMFILE", "fds")
    throttle.occurred("ENFILE", "system fds")
    throttle.occurred("EMFILE", "fds")
    clock.now += 2.0
    throttle.recovered()
    assert _lines(caplog) == [
        (logging.WARNING, "accept failed: fds"),
        (logging.WARNING, "accept failed: system fds"),
        (logging.WARNING, "accept failed 1 more time in the last 2 s (EMFILE), then recovered"),
        (logging.INFO, "accept failed (ENFILE): recovered"),
    ]

"""LogThrottle: a recurring condition is logged once, then counted, with a fake clock: the
listener's accept errors (the default wording) and the writer's outage (ERROR with tracebacks,
counted as one)."""

from __future__ import annotations

import logging

import pytest

from server.ops import log_throttle
from server.ops.log_throttle import LogThrottle
from server.persist.writer import OUTAGE_WORDING

LOGGER = "test.log_throttle"
OUTAGE_LOGGER = "test.log_throttle.outage"


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
        throttle.occurred("EMFILE", "accept failed: %s", "[Errno 24] Too many open files")
        clock.now += 0.05
    assert _lines(caplog) == [(logging.WARNING, "accept failed: [Errno 24] Too many open files")]
    first = next(r for r in caplog.records if r.name == LOGGER)
    assert first.__dict__["condition"] == "EMFILE"


def test_repeats_are_summarised_at_most_once_per_interval(
    throttle: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.occurred("EMFILE", "accept failed: too many")  # logged; its window starts at 100
    for _ in range(80):  # 80 repeats over 100.125 .. 110.0 (steps exact in binary)
        clock.now += 0.125
        throttle.occurred("EMFILE", "accept failed: too many")
    for _ in range(5):  # within the next window: counted only
        clock.now += 0.125
        throttle.occurred("EMFILE", "accept failed: too many")
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
    throttle.occurred("EMFILE", "accept failed: too many")
    clock.now += 1.0
    throttle.occurred("EMFILE", "accept failed: too many")
    clock.now += 1.0
    throttle.occurred("EMFILE", "accept failed: too many")
    clock.now += 1.0
    throttle.recovered()
    throttle.recovered()  # once only
    throttle.occurred("EMFILE", "accept failed: too many again")  # a new episode: logged again
    assert _lines(caplog) == [
        (logging.WARNING, "accept failed: too many"),
        (logging.WARNING, "accept failed 2 more times in the last 3 s (EMFILE), then recovered"),
        (logging.WARNING, "accept failed: too many again"),
    ]


def test_recovery_without_repeats_is_logged_at_info(
    throttle: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.occurred("ENOBUFS", "accept failed: no buffer space")
    throttle.recovered()
    assert _lines(caplog) == [
        (logging.WARNING, "accept failed: no buffer space"),
        (logging.INFO, "accept failed (ENOBUFS): recovered"),
    ]


def test_each_condition_is_logged_and_counted_on_its_own(
    throttle: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.occurred("EMFILE", "accept failed: fds")
    throttle.occurred("ENFILE", "accept failed: system fds")
    throttle.occurred("EMFILE", "accept failed: fds")
    clock.now += 2.0
    throttle.recovered()
    assert _lines(caplog) == [
        (logging.WARNING, "accept failed: fds"),
        (logging.WARNING, "accept failed: system fds"),
        (logging.WARNING, "accept failed 1 more time in the last 2 s (EMFILE), then recovered"),
        (logging.INFO, "accept failed (ENFILE): recovered"),
    ]


def test_the_first_line_is_a_warning_without_traceback_by_default(
    throttle: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    throttle.occurred("EMFILE", "accept failed: %s", OSError(24, "Too many open files"), exc=None)
    throttle.occurred("ENFILE", "accept failed: %s", "x", exc=OSError(23, "Too many"))
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.getMessage() for r in records] == [
        "accept failed: [Errno 24] Too many open files",
        "accept failed: x",
    ]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records)


def test_conditions_past_the_bound_are_counted_together(
    throttle: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    for i in range(log_throttle.MAX_CONDITIONS + 3):
        throttle.occurred(f"E{i}", "accept failed: %d", i)
    clock.now += 1.0
    throttle.recovered()
    lines = _lines(caplog)
    assert len(lines) == 2 * log_throttle.MAX_CONDITIONS + 1
    assert lines[log_throttle.MAX_CONDITIONS - 1] == (logging.WARNING, "accept failed: 31")
    assert lines[-1] == (
        logging.WARNING,
        "accept failed 3 more times in the last 1 s (other), then recovered",
    )
    assert throttle.failures == 0


@pytest.fixture
def failures(clock: FakeClock) -> LogThrottle:
    # The writer's wording, for widgets.
    return LogThrottle(
        logging.getLogger(OUTAGE_LOGGER),
        "widgets",
        first_level=logging.ERROR,
        traceback=True,
        wording=OUTAGE_WORDING,
        clock=clock,
    )


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def _fail(failures: LogThrottle, exc: BaseException, message: str, *args: object) -> None:
    """As the writer records a failed batch: one condition per exception type and message."""
    failures.occurred(f"{type(exc).__qualname__}: {exc}", message, *args, exc=exc)


def test_the_first_failure_of_a_kind_is_logged_with_its_traceback_and_repeats_are_not(
    failures: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(100):
        _fail(failures, OSError(28, "No space left on device"), "widget %d failed", i)
    assert _outage_lines(caplog) == ["widget 0 failed"]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert failures.failures == 100


def test_a_new_kind_of_failure_is_logged_in_full_too(
    failures: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    _fail(failures, OSError(28, "No space left on device"), "first")
    _fail(failures, OSError(28, "No space left on device"), "again")
    _fail(failures, OSError(5, "Input/output error"), "other message")
    _fail(failures, ValueError("No space left on device"), "other type")
    assert _outage_lines(caplog) == ["first", "other message", "other type"]
    assert all(record.exc_info is not None for record in caplog.records)


def test_while_failures_persist_a_count_is_logged_once_per_interval(
    failures: LogThrottle, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    error = OSError(28, "No space left on device")
    _fail(failures, error, "first")
    start = clock.now
    for i in range(1, 1001):  # 40 a second for 25 s
        clock.now = start + i / 40
        _fail(failures, error, "first")
    lines = _outage_lines(caplog)
    assert lines[0] == "first"
    assert lines[1:] == [
        "widgets still failing: 400 in the last 10 s",
        "widgets still failing: 400 in the last 10 s",
    ], lines
    assert all(record.exc_info is None for record in caplog.records[1:])
    assert caplog.records[1].__dict__["failures"] == 400


def test_success_after_failures_is_logged_once_and_rearms_the_full_log(
    failures: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    failures.recovered()
    assert caplog.records == []
    error = OSError(28, "No space left on device")
    for _ in range(5):
        _fail(failures, error, "full")
    failures.recovered()
    failures.recovered()
    assert _outage_lines(caplog) == ["full", "widgets are being stored again after 5 failures"]
    assert caplog.records[1].levelno == logging.WARNING
    assert failures.failures == 0
    _fail(failures, error, "full")  # a new outage: its first failure in full again
    assert _outage_lines(caplog)[2:] == ["full"]
    assert caplog.records[2].exc_info is not None


def test_the_kinds_remembered_are_bounded(
    failures: LogThrottle, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(log_throttle.MAX_CONDITIONS + 50):
        _fail(failures, RuntimeError(f"row {i}"), "kind %d", i)
    assert len(caplog.records) == log_throttle.MAX_CONDITIONS
    assert failures.failures == log_throttle.MAX_CONDITIONS + 50

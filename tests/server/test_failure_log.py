"""RepeatedFailureLog: a failure repeated many times a second is logged as one outage."""

from __future__ import annotations

import logging

import pytest

from server.ops import failure_log as log_throttle
from server.ops.failure_log import RepeatedFailureLog

_logger = logging.getLogger("tests.log_throttle")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def failures(clock: _Clock) -> RepeatedFailureLog:
    return RepeatedFailureLog(_logger, "widgets", recovered="work again", clock=clock)


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_the_first_failure_of_a_kind_is_logged_with_its_traceback_and_repeats_are_not(
    failures: RepeatedFailureLog, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(100):
        failures.failed(OSError(28, "No space left on device"), "widget %d failed", i)
    assert _lines(caplog) == ["widget 0 failed"]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert failures.failures == 100


def test_a_new_kind_of_failure_is_logged_in_full_too(
    failures: RepeatedFailureLog, caplog: pytest.LogCaptureFixture
) -> None:
    failures.failed(OSError(28, "No space left on device"), "first")
    failures.failed(OSError(28, "No space left on device"), "again")
    failures.failed(OSError(5, "Input/output error"), "other message")
    failures.failed(ValueError("No space left on device"), "other type")
    assert _lines(caplog) == ["first", "other message", "other type"]
    assert all(record.exc_info is not None for record in caplog.records)


def test_while_failures_persist_a_count_is_logged_once_per_interval(
    failures: RepeatedFailureLog, clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    error = OSError(28, "No space left on device")
    failures.failed(error, "first")
    start = clock.now
    for i in range(1, 1001):  # 40 a second for 25 s
        clock.now = start + i / 40
        failures.failed(error, "first")
    lines = _lines(caplog)
    assert lines[0] == "first"
    assert lines[1:] == [
        "widgets still failing: 400 in the last 10 s",
        "widgets still failing: 400 in the last 10 s",
    ], lines
    assert all(record.exc_info is None for record in caplog.records[1:])
    assert caplog.records[1].__dict__["failures"] == 400


def test_success_after_failures_is_logged_once_and_rearms_the_full_log(
    failures: RepeatedFailureLog, caplog: pytest.LogCaptureFixture
) -> None:
    failures.succeeded()
    assert caplog.records == []
    error = OSError(28, "No space left on device")
    for _ in range(5):
        failures.failed(error, "full")
    failures.succeeded()
    failures.succeeded()
    assert _lines(caplog) == ["full", "widgets work again after 5 failures"]
    assert caplog.records[1].levelno == logging.WARNING
    assert failures.failures == 0
    failures.failed(error, "full")  # a new outage: its first failure in full again
    assert _lines(caplog)[2:] == ["full"]
    assert caplog.records[2].exc_info is not None


def test_the_kinds_remembered_are_bounded(
    failures: RepeatedFailureLog, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(log_throttle.MAX_KINDS + 50):
        failures.failed(RuntimeError(f"row {i}"), "kind %d", i)
    assert len(caplog.records) == log_throttle.MAX_KINDS
    assert failures.failures == log_throttle.MAX_KINDS + 50

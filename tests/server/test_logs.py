"""Logs: JSON lines off a terminal, text on one; structured extras; secrets never written."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.ops.logs import REDACTED, configure_logging

from ..conftest import make_config, register, running_server


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_ts_level_logger_msg_and_extras() -> None:
    out = io.StringIO()
    configure_logging("INFO", "auto", out)  # not a terminal: JSON
    logging.getLogger("hibiki.test").info(
        "connection %s", "closed", extra={"peer": "1.2.3.4:5", "code": 1001, "duration_s": 1.5}
    )
    (line,) = _lines(out)
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["logger"] == "hibiki.test"
    assert record["msg"] == "connection closed"
    assert (record["peer"], record["code"], record["duration_s"]) == ("1.2.3.4:5", 1001, 1.5)
    assert record["ts"].endswith("Z") and "T" in record["ts"]


def test_text_on_a_terminal_with_extras_as_key_values() -> None:
    out = _Terminal()
    configure_logging("INFO", "auto", out)
    logging.getLogger("hibiki.test").warning("slow", extra={"peer": "a b", "n": 3})
    (line,) = _lines(out)
    assert "WARNING hibiki.test: slow" in line
    assert line.endswith('peer="a b" n=3')


def test_explicit_format_wins_over_detection() -> None:
    out = _Terminal()
    configure_logging("INFO", "json", out)
    logging.getLogger("x").info("hi")
    assert json.loads(_lines(out)[0])["msg"] == "hi"


def test_level_filters_and_exceptions_are_one_json_line() -> None:
    out = io.StringIO()
    configure_logging("WARNING", "json", out)
    log = logging.getLogger("hibiki.test")
    log.info("not shown")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    (line,) = _lines(out)
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert "ValueError: boom" in record["exc"]


def test_secret_extras_are_redacted() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    logging.getLogger("x").info(
        "oops", extra={"token": "t0k3n", "text": "private message", "password": "pw"}
    )
    record = json.loads(_lines(out)[0])
    assert record["token"] == record["text"] == record["password"] == REDACTED
    assert "t0k3n" not in out.getvalue()


def test_journald_stream_gets_syslog_priority_prefixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "journal", "w+") as out:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("INFO", "json", out)
        logging.getLogger("x").warning("careful")
        logging.getLogger("x").info("fine")
        out.flush()
        out.seek(0)
        warning, info = out.read().splitlines()
    assert warning.startswith("<4>{") and json.loads(warning[3:])["msg"] == "careful"
    assert info.startswith("<6>{")


async def test_server_logs_are_json_and_never_carry_tokens_or_passwords(tmp_path: Path) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "json", out)
    async with (
        running_server(make_config(tmp_path)) as server,
        httpx.AsyncClient(base_url=server.http) as http,
    ):
        account = await register(http)
        await http.post("/api/login", json={"name": account.name, "password": "wrong pw!"})
    records = [json.loads(line) for line in _lines(out)]
    listening = next(r for r in records if "listening on" in r["msg"])
    assert listening["port"] == server.port and listening["server_id"] == "test"
    assert any(r["msg"] == "stopped" for r in records)
    assert account.token not in out.getvalue()
    assert "correct horse" not in out.getvalue() and "wrong pw!" not in out.getvalue()

"""Process-wide logging: JSON lines for machines, readable text for a terminal.

    logger.info("connection closed", extra={"peer": peer, "code": 1001, "duration_s": 3.2})

becomes, with `log_format = "json"` (the default when stderr is not a terminal, e.g. journald):

    {"ts": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "server.chat.websocket",
     "msg": "connection closed", "peer": "10.0.0.7:51234", "code": 1001, "duration_s": 3.2}

and on a terminal:
`12:00:00.123 INFO  server.chat.websocket: connection closed peer=... code=1001`.

Logs never carry message bodies, passwords or tokens: extras with such names are replaced by
"[redacted]" as a last line of defence, but the rule is not to pass them at all.
Under systemd, when stderr is the journal (`$JOURNAL_STREAM`), each line starts with a `<N>`
syslog priority prefix, which journald strips and stores as the entry's priority.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

REDACTED = "[redacted]"
_SENSITIVE = frozenset({"text", "body", "token", "password", "authorization", "cookie"})
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_SYSLOG_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


def configure_logging(level: str, log_format: str = "auto", stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr) in one format; replaces other handlers.

    `log_format` is "json", "text", or "auto" (text on a terminal, JSON otherwise).
    """
    out = sys.stderr if stream is None else stream
    use_json = log_format == "json" or (log_format == "auto" and not _isatty(out))
    formatter: logging.Formatter = JsonFormatter() if use_json else TextFormatter()
    if _is_journal(out):
        formatter = _JournalPriority(formatter)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields passed with `extra=`, sensitive ones redacted."""
    return {
        key: REDACTED if key.lower() in _SENSITIVE else value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, extras, exc (traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL logger: message key=value ...` for a human at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s", "%X")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in extras(record).items())
        return f"{line} {fields}" if fields else line


class _JournalPriority(logging.Formatter):
    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelname, 6)
        return f"<{priority}>{self._inner.format(record)}"


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _is_journal(stream: TextIO) -> bool:
    """True if `stream` is the journald stream systemd connected ($JOURNAL_STREAM=dev:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"

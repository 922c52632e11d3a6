"""Operations: readiness, metrics, logs, systemd notification."""

from server.ops.health import Readiness
from server.ops.logs import REDACTED, configure_logging
from server.ops.metrics import (
    CLOSE_REASONS,
    DB_BUCKETS,
    Metrics,
    close_label,
    query_types,
    timed_store,
)
from server.ops.sdnotify import notify

__all__ = [
    "CLOSE_REASONS",
    "DB_BUCKETS",
    "REDACTED",
    "Metrics",
    "Readiness",
    "close_label",
    "configure_logging",
    "notify",
    "query_types",
    "timed_store",
]

"""One config object, built once and passed down; unknown keys are rejected, never ignored.

`Config` holds the settings and checks their values; `server.config_file` fills it from a TOML
file, `HIBIKI_*` environment variables and command-line flags (docs/operations.md lists them all).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES
KiB = 1024
MiB = 1024 * KiB

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("auto", "json", "text")


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names the key (and where it came from).

    `problems` holds (key, what is wrong) pairs, so a loader can say which source set the key.
    """

    def __init__(self, problems: str | Sequence[tuple[str, str]]) -> None:
        self.problems: list[tuple[str, str]] = (
            [("", problems)] if isinstance(problems, str) else list(problems)
        )
        super().__init__("; ".join(f"{k}: {msg}" if k else msg for k, msg in self.problems))


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    db_path: str = "hibiki.db"
    sqlite_synchronous: str = "FULL"
    sqlite_readers: int = 2
    scrypt_n: int = 2**14
    server_id: str = field(default_factory=lambda: "hibiki-" + secrets.token_hex(3))
    # Protocol limits.
    max_text: int = 4000
    max_frame: int = 64 * KiB
    max_protocol_errors: int = 50
    # Flow control.
    outbound_limit: int = 1 * MiB
    writer_queue: int = 10_000
    writer_max_batch: int = 1000
    http_max_batch: int = 1000
    # Per-user token bucket over all requests that fan out (send, typing).
    rate_per_second: float = 20.0
    rate_burst: float = 50.0
    # Login throttling (docs/http.md#login-throttling); a limit of 0 disables it.
    login_address_limit: int = 20  # failures from one address before it is blocked
    login_address_window: float = 5 * MINUTES  # quiet time after which they are forgotten
    login_address_backoff: float = 1 * SECONDS  # first block; doubles per failure, to the window
    login_account_limit: int = 10  # failures on one account before failed addresses wait
    login_account_window: float = 15 * MINUTES
    # Reverse proxies whose X-Forwarded-For names the client (addresses or networks).
    trusted_proxies: tuple[str, ...] = ()
    # Liveness.
    handshake_timeout: float = 10 * SECONDS
    hello_timeout: float = 10 * SECONDS
    heartbeat_interval: float = 20 * SECONDS
    heartbeat_deadline: float = 20 * SECONDS
    close_timeout: float = 2 * SECONDS
    drain_timeout: float = 10 * SECONDS
    # Recovery and caches.
    resume_max_gap: int = 1000
    membership_cache_size: int = 100_000
    membership_cache_ttl: float = 60 * SECONDS
    token_ttl: float = 7 * 24 * HOURS
    allowed_origins: tuple[str, ...] = ()
    # Operations.
    log_level: str = "INFO"
    log_format: str = "auto"  # auto: JSON lines unless stderr is a terminal
    metrics: bool = True  # serve GET /metrics
    db_probe_interval: float = 5 * SECONDS  # /readyz write probe while the writer is idle

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Config:
        """Build from a mapping, refusing unknown keys (a typo must not silently do nothing)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError([(key, "unknown setting") for key in unknown])
        return cls(**values)


def _problems(config: Config) -> list[tuple[str, str]]:
    out = []
    if not 0 <= config.port <= 65535:
        out.append(("port", f"{config.port} is not a TCP port"))
    if config.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        out.append(("sqlite_synchronous", "must be OFF, NORMAL, FULL or EXTRA"))
    for name in (
        "max_text",
        "max_frame",
        "outbound_limit",
        "writer_queue",
        "writer_max_batch",
        "http_max_batch",
        "sqlite_readers",
        "max_protocol_errors",
        "membership_cache_size",
    ):
        if getattr(config, name) < 1:
            out.append((name, "must be at least 1"))
    if config.resume_max_gap < 0:
        out.append(("resume_max_gap", "must not be negative"))
    for name in (
        "handshake_timeout",
        "hello_timeout",
        "heartbeat_interval",
        "heartbeat_deadline",
        "close_timeout",
        "drain_timeout",
        "token_ttl",
        "membership_cache_ttl",
        "db_probe_interval",
    ):
        if not getattr(config, name) > 0:
            out.append((name, "must be positive"))
    for name in ("rate_per_second", "rate_burst"):
        if not getattr(config, name) >= 0:
            out.append((name, "must not be negative (0 disables the limit)"))
    out.extend(_login_problems(config))
    if config.log_level.upper() not in LOG_LEVELS:
        out.append(("log_level", f"must be one of {', '.join(LOG_LEVELS)}"))
    if config.log_format not in LOG_FORMATS:
        out.append(("log_format", f"must be one of {', '.join(LOG_FORMATS)}"))
    return out


def _login_problems(config: Config) -> list[tuple[str, str]]:
    out = []
    for name in ("login_address_limit", "login_account_limit"):
        if getattr(config, name) < 0:
            out.append((name, "must not be negative (0 disables the limit)"))
    for name in ("login_address_window", "login_address_backoff", "login_account_window"):
        if not getattr(config, name) > 0:
            out.append((name, "must be positive"))
    for proxy in config.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            out.append(("trusted_proxies", f"{proxy!r} is not an IP address or network"))
    return out

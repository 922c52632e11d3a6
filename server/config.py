"""One config object, built once and passed down; unknown keys are rejected, never ignored.

`Config` is a frozen dataclass of frozen sections (`config.limits.rate_burst`); each section holds
the settings of one part and checks their values. A setting's name is unique across sections, so
environment variables and flags keep flat names (`HIBIKI_RATE_BURST`, `--rate-burst`) and
`SECTION_OF` finds the section of each. `server.config_file` fills a `Config` from a TOML file (one
table per section), `HIBIKI_*` environment variables and command-line flags; docs/operations.md
lists every setting. A new setting is one line in its section (plus its check, if any).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES
KiB = 1024
MiB = 1024 * KiB

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("auto", "json", "text")
MAX_WORKERS = 64
SYNCHRONOUS_COMMIT_MODES = ("on", "off", "local", "remote_write", "remote_apply")

Problems = list[tuple[str, str]]


class ConfigError(ValueError):
    """A setting is unknown or invalid; the message names the key (and where it came from).

    `problems` holds (key, what is wrong) pairs, so a loader can say which source set the key.
    """

    def __init__(self, problems: str | Sequence[tuple[str, str]]) -> None:
        self.problems: list[tuple[str, str]] = (
            [("", problems)] if isinstance(problems, str) else list(problems)
        )
        super().__init__("; ".join(f"{k}: {msg}" if k else msg for k, msg in self.problems))


class Section:
    """A group of settings that checks its own values when built (`ConfigError` lists them)."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # each one is a dataclass

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def problems(self) -> Problems:
        return []


@dataclass(frozen=True, slots=True)
class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = 8080
    server_id: str = field(default_factory=lambda: "hibiki-" + secrets.token_hex(3))
    # Reverse proxies whose X-Forwarded-For names the client (addresses or networks).
    trusted_proxies: tuple[str, ...] = ()
    # Processes sharing the port (SO_REUSEPORT) under a supervisor; 1: this process serves.
    workers: int = 1

    def problems(self) -> Problems:
        out = []
        if not 0 <= self.port <= 65535:
            out.append(("port", f"{self.port} is not a TCP port"))
        if not 1 <= self.workers <= MAX_WORKERS:
            out.append(("workers", f"must be 1 to {MAX_WORKERS}"))
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                out.append(("trusted_proxies", f"{proxy!r} is not an IP address or network"))
        return out


@dataclass(frozen=True, slots=True)
class StorageConfig(Section):
    db_path: str = "hibiki.db"
    sqlite_synchronous: str = "FULL"
    sqlite_readers: int = 2
    # A small lone batch commits on the event loop while the writer thread idles; a commit on
    # the loop slower than the stall bound sends every batch to the thread for 30 s.
    sqlite_loop_commit: bool = True
    sqlite_loop_commit_stall: float = 0.05 * SECONDS
    # PostgreSQL (a postgresql:// db_path): connections, a bound on every query, durability.
    pool_size: int = 10
    statement_timeout: float = 10 * SECONDS
    synchronous_commit: str = "on"
    # PostgreSQL read replicas for history and resume (docs/operations.md, "Read replicas").
    replicas: tuple[str, ...] = ()
    replica_max_lag: float = 5 * SECONDS  # a replica further behind is skipped until it is not
    replica_probe_interval: float = 1 * SECONDS  # lag probes; a down replica's back off to 30 s
    replica_timeout: float = 2 * SECONDS  # per replica read or probe; then the primary answers
    # PostgreSQL shard databases for messages; db_path is then the catalog (docs/operations.md,
    # "Shards"). Every database the directory names must be listed, on every node.
    shards: tuple[str, ...] = ()

    def problems(self) -> Problems:
        out = _at_least_one(self, "sqlite_readers", "pool_size")
        if self.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            out.insert(0, ("sqlite_synchronous", "must be OFF, NORMAL, FULL or EXTRA"))
        if self.synchronous_commit.lower() not in SYNCHRONOUS_COMMIT_MODES:
            out.append(("synchronous_commit", f"must be {', '.join(SYNCHRONOUS_COMMIT_MODES)}"))
        out += _positive(self, "statement_timeout")
        out += _positive(self, "replica_max_lag", "replica_probe_interval", "replica_timeout")
        postgres = ("postgresql://", "postgres://")
        if any(not url.startswith(postgres) for url in self.replicas):
            out.append(("replicas", "each must be a postgresql:// URL"))
        elif self.replicas and not self.db_path.startswith(postgres):
            out.append(("replicas", "need a postgresql:// db_path (the primary)"))
        if any(not url.startswith(postgres) for url in self.shards):
            out.append(("shards", "each must be a postgresql:// URL"))
        elif self.shards and not self.db_path.startswith(postgres):
            out.append(("shards", "need a postgresql:// db_path (the catalog)"))
        elif self.shards and self.replicas:
            # `replicas` are the catalog's, which holds no sharded message (docs/operations.md,
            # "Shards": read replicas)
            out.append(("shards", "cannot be combined with replicas yet (see Shards in the docs)"))
        return out


@dataclass(frozen=True, slots=True)
class AccountsConfig(Section):
    scrypt_n: int = 2**14
    token_ttl: float = 7 * 24 * HOURS
    # Login throttling (docs/http.md#login-throttling); a limit of 0 disables it.
    login_address_limit: int = 20  # failures from one address before it is blocked
    login_address_window: float = 5 * MINUTES  # quiet time after which they are forgotten
    login_address_backoff: float = 1 * SECONDS  # first block; doubles per failure, to the window
    login_account_limit: int = 10  # failures on one account before failed addresses wait
    login_account_window: float = 15 * MINUTES

    def problems(self) -> Problems:
        out = [
            (name, "must not be negative (0 disables the limit)")
            for name in ("login_address_limit", "login_account_limit")
            if getattr(self, name) < 0
        ]
        return out + _positive(
            self,
            "token_ttl",
            "login_address_window",
            "login_address_backoff",
            "login_account_window",
        )


@dataclass(frozen=True, slots=True)
class LimitsConfig(Section):
    # Protocol limits.
    max_text: int = 4000
    max_frame: int = 64 * KiB
    max_protocol_errors: int = 50
    # Flow control.
    outbound_limit: int = 1 * MiB
    writer_queue: int = 10_000
    writer_max_batch: int = 1000
    # Requests one connection's reader handles before it lets other tasks run (it also yields
    # at each wait for the socket): one flooding client cannot hold the event loop longer.
    # 128: a burst of that many stays in one writer batch (64 split the benchmark's 128-deep
    # windows into half batches), at ~100 µs of reader CPU each ~13 ms, under a flusher sweep.
    admit_per_turn: int = 128
    http_max_batch: int = 1000
    # Per-user token bucket over all requests that fan out (send, typing).
    rate_per_second: float = 20.0
    rate_burst: float = 50.0
    # Per client IP (0: no cap): open connections, and those not yet past hello (or, for plain
    # HTTP, past the request head). Generous: one NAT can hold many real users.
    max_connections_per_address: int = 1000
    max_pending_per_address: int = 64

    def problems(self) -> Problems:
        out = _at_least_one(
            self,
            "max_text",
            "max_frame",
            "outbound_limit",
            "writer_queue",
            "writer_max_batch",
            "admit_per_turn",
            "http_max_batch",
            "max_protocol_errors",
        )
        for name in ("rate_per_second", "rate_burst"):
            if not getattr(self, name) >= 0:
                out.append((name, "must not be negative (0 disables the limit)"))
        for name in ("max_connections_per_address", "max_pending_per_address"):
            if getattr(self, name) < 0:
                out.append((name, "must not be negative"))
        return out


@dataclass(frozen=True, slots=True)
class TimeoutsConfig(Section):
    handshake_timeout: float = 10 * SECONDS
    http_idle_timeout: float = 5 * SECONDS  # an HTTP connection with no request in progress
    http_read_timeout: float = 30 * SECONDS  # the rest of a request once it has started arriving
    hello_timeout: float = 10 * SECONDS
    heartbeat_interval: float = 20 * SECONDS
    heartbeat_deadline: float = 20 * SECONDS
    close_timeout: float = 2 * SECONDS
    drain_timeout: float = 10 * SECONDS

    def problems(self) -> Problems:
        return _positive(self, *(f.name for f in dataclasses.fields(self)))


@dataclass(frozen=True, slots=True)
class ChatConfig(Section):
    resume_max_gap: int = 1000
    resume_stall_timeout: float = 20 * SECONDS  # a replay part not taken by then: 4008
    membership_cache_size: int = 100_000
    membership_cache_ttl: float = 60 * SECONDS
    allowed_origins: tuple[str, ...] = ()

    def problems(self) -> Problems:
        out = _at_least_one(self, "membership_cache_size")
        if self.resume_max_gap < 0:
            out.append(("resume_max_gap", "must not be negative"))
        return out + _positive(self, "membership_cache_ttl", "resume_stall_timeout")


@dataclass(frozen=True, slots=True)
class OpsConfig(Section):
    log_level: str = "INFO"
    log_format: str = "auto"  # auto: JSON lines unless stderr is a terminal
    metrics: bool = True  # serve GET /metrics
    db_probe_interval: float = 5 * SECONDS  # /readyz write probe while the writer is idle
    stage_trace: str = ""  # debug: write each message's stage times to this file

    def problems(self) -> Problems:
        out = _positive(self, "db_probe_interval")
        if self.log_level.upper() not in LOG_LEVELS:
            out.append(("log_level", f"must be one of {', '.join(LOG_LEVELS)}"))
        if self.log_format not in LOG_FORMATS:
            out.append(("log_format", f"must be one of {', '.join(LOG_FORMATS)}"))
        return out


@dataclass(frozen=True, slots=True)
class BusConfig(Section):
    """Room events between processes (docs/operations.md, "Several processes: the Redis bus")."""

    redis_url: str = ""  # empty: one process, the in-process bus
    bus_namespace: str = "hibiki"  # prefix of every Redis key and channel of one cluster
    bus_partitions: int = 64  # channels rooms are spread over (fixed for a cluster's lifetime)
    bus_tail_check_interval: float = 2 * SECONDS  # idle live rooms compared with the store
    redis_connect_timeout: float = 2 * SECONDS  # per connection attempt to Redis
    redis_ping_interval: float = 1 * SECONDS  # keepalive PING on the bus's connections
    redis_ping_timeout: float = 2 * SECONDS  # unanswered this long: Redis is down (reconnect)
    presence_ttl: float = 15 * SECONDS  # a node's presence entry lives this long unrefreshed
    presence_heartbeat: float = 5 * SECONDS  # between refreshes (and sweeps of expired entries)

    def problems(self) -> Problems:
        out = _at_least_one(self, "bus_partitions")
        out += _positive(
            self,
            "bus_tail_check_interval",
            "redis_connect_timeout",
            "redis_ping_interval",
            "redis_ping_timeout",
            "presence_ttl",
            "presence_heartbeat",
        )
        if self.presence_heartbeat >= self.presence_ttl:
            out.append(("presence_heartbeat", "must be less than presence_ttl"))
        schemes = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
        if self.redis_url and not self.redis_url.startswith(schemes):
            out.append(("redis_url", "must be a redis:// or redis+cluster:// URL"))
        if not self.bus_namespace or any(c in self.bus_namespace for c in "{}: "):
            out.append(("bus_namespace", "must be non-empty, without braces, colons or spaces"))
        return out


@dataclass(frozen=True, slots=True)
class EventsConfig(Section):
    """The MESSAGE_CREATED event stream (docs/events.md; docs/operations.md, "Event stream")."""

    events_enabled: bool = False
    events_redis_url: str = ""  # empty: the bus's redis_url
    stream_maxlen: int = 100_000  # per partition stream, trimmed approximately (MAXLEN ~)
    stream_partitions: int = 16  # streams rooms are spread over (fixed for a stream's lifetime)
    events_append_timeout: float = 5 * SECONDS  # one round of XADDs; then retried from the store

    def problems(self) -> Problems:
        out = _at_least_one(self, "stream_maxlen", "stream_partitions")
        out += _positive(self, "events_append_timeout")
        url = self.events_redis_url
        if url and not url.startswith(("redis://", "rediss://")):
            out.append(("events_redis_url", "must be a redis:// URL"))
        return out


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting, by section; the TOML file has one table per field here."""

    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    events: EventsConfig = field(default_factory=EventsConfig)

    @classmethod
    def from_flat(cls, **values: Any) -> Config:
        """Build from flat setting names (`port=0, rate_burst=5`), each put in its section.

        An unknown name, and every invalid value in every section, is one `ConfigError`.
        """
        unknown = sorted(set(values) - set(SECTION_OF))
        if unknown:
            raise ConfigError([(key, "unknown setting") for key in unknown])
        sections: dict[str, Section] = {}
        problems: Problems = []
        for name, section in SECTIONS.items():
            mine = {key: value for key, value in values.items() if SECTION_OF[key] == name}
            try:
                sections[name] = section(**mine)
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise ConfigError(problems)
        config = cls(**sections)  # type: ignore[arg-type]  # each value is its field's section
        return config._checked()

    def _checked(self) -> Config:
        """Checks across sections."""
        if self.events.events_enabled and not self.events_url:
            raise ConfigError([("events_redis_url", "events need it, or the bus's redis_url")])
        return self

    @property
    def events_url(self) -> str:
        """Where the event stream is: `events_redis_url`, else the bus's Redis."""
        return self.events.events_redis_url or self.bus.redis_url


def _at_least_one(section: Section, *names: str) -> Problems:
    return [(name, "must be at least 1") for name in names if getattr(section, name) < 1]


def _positive(section: Section, *names: str) -> Problems:
    return [(name, "must be positive") for name in names if not getattr(section, name) > 0]


def _sections() -> dict[str, type[Section]]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _section_of() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, section in SECTIONS.items():
        for f in dataclasses.fields(section):
            if f.name in out:  # flags and HIBIKI_* names would be ambiguous
                raise TypeError(f"setting {f.name!r} is in both [{out[f.name]}] and [{name}]")
            out[f.name] = name
    return out


# Section name -> its class, in `Config`'s order (the order `config show` prints).
SECTIONS: Mapping[str, type[Section]] = _sections()
# Flat setting name (env, flags, docs) -> the section holding it; names are unique (checked here).
SECTION_OF: Mapping[str, str] = _section_of()

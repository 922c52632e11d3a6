"""`hibiki` command line.

    hibiki serve [--config FILE] [flags]       run the server until SIGINT/SIGTERM
    hibiki config show [--config FILE] [flags] print the effective config (secrets masked)
    hibiki backup [--config FILE] [--db URL] DEST    online backup of the database
    hibiki migrate --from sqlite:///F --to postgresql://...  copy to PostgreSQL, then verify
    hibiki shards status|move L --to URL|pin ROOM --to URL [flags]  message shards, online moves
    hibiki events tail [--group G]             follow the event stream (server/events/)
    hibiki events index --db FILE              the search indexer consuming the event stream
    hibiki chat ...                            the terminal client (client/terminal.py)

Settings come from defaults < `--config` TOML file < `HIBIKI_*` environment < flags; an invalid
setting exits with status 2 and a message naming the key and where it came from. A server that
cannot start (database cannot be opened, port taken) exits with status 1 and one line saying why.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from server import shards_cli
from server.config import SECTION_OF, Config, ConfigError
from server.config_file import LoadedConfig, load_config, to_toml

EXIT_FAILURE = 1  # could not do it: the server cannot start, the backup failed
EXIT_USAGE = 2  # invalid configuration or arguments, as argparse uses


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["chat"]:  # the client parses its own arguments
        return _chat(args[1:])
    if args[:1] == ["events"]:  # the event-stream consumers parse their own arguments
        from server.events.tail import main as events_main

        return events_main(args[1:])
    parsed = _parser().parse_args(args)
    if parsed.command == "config":
        return _config_show(parsed)
    if parsed.command == "backup":
        return _backup(parsed)
    if parsed.command == "migrate":
        return _migrate(parsed)
    if parsed.command == "shards":
        return _shards(parsed)
    return _serve(parsed, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hibiki", description="hibiki chat server")
    commands = parser.add_subparsers(dest="command", required=True)
    settings = _settings_parser()
    commands.add_parser(
        "serve",
        parents=[settings],
        help="run the chat server (HTTP and WebSocket on one port)",
    )
    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser(
        "show", parents=[settings], help="print the effective configuration as TOML"
    )
    backup = commands.add_parser(
        "backup", help="copy the database to DEST with an online backup (safe while serving)"
    )
    backup.add_argument("--config", dest="config_path", metavar="FILE", help="TOML config file")
    backup.add_argument(
        "--db", dest="db_path", help="database file or URL (default: from the config)"
    )
    backup.add_argument("dest", help="new file to write (must not exist)")
    _add_migrate(commands)
    shards_cli.add_parser(commands, settings)
    commands.add_parser("chat", help="terminal chat client (hibiki chat --help)")
    commands.add_parser("events", help="follow the event stream (hibiki events --help)")
    return parser


def _add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="copy a SQLite database into PostgreSQL (resumable, incremental), then verify",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="sqlite:///FILE")
    migrate.add_argument("--to", dest="target", required=True, metavar="postgresql://...")
    migrate.add_argument("--verify-only", action="store_true", help="compare, copy nothing")
    migrate.add_argument("--quiet", action="store_true", help="no progress bar")
    migrate.add_argument(
        "--chunk", type=_positive_int, default=None, help="messages per transaction"
    )


def _settings_parser() -> argparse.ArgumentParser:
    """Flags shared by `serve` and `config show`; each dest is a setting's flat name."""
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--config", dest="config_path", metavar="FILE", help="TOML config file")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--db", dest="db_path", help="database file or URL")
    run.add_argument(
        "--db-replica",
        dest="replicas",
        action="append",
        metavar="URL",
        help="PostgreSQL read replica for history and resume (repeatable)",
    )
    run.add_argument(
        "--db-shard",
        dest="shards",
        action="append",
        metavar="URL",
        help="PostgreSQL shard database for messages; --db is the catalog (repeatable)",
    )
    run.add_argument("--server-id", dest="server_id")
    run.add_argument(
        "--workers", type=int, help="worker processes sharing the port (needs --redis)"
    )
    run.add_argument("--redis", dest="redis_url", metavar="URL", help="Redis for the bus")
    run.add_argument("--log-level", dest="log_level")
    run.add_argument("--log-format", dest="log_format", choices=["auto", "json", "text"])
    run.add_argument(
        "--rate-limit",
        dest="rate_per_second",
        type=float,
        help="messages per second per user (0 disables)",
    )
    run.add_argument("--rate-burst", dest="rate_burst", type=float)
    run.add_argument(
        "--max-connections-per-address",
        dest="max_connections_per_address",
        type=int,
        help="open connections per client IP (0: no cap)",
    )
    run.add_argument(
        "--max-pending-per-address",
        dest="max_pending_per_address",
        type=int,
        help="connections per client IP not yet past hello (0: no cap)",
    )
    run.add_argument(
        "--synchronous", dest="sqlite_synchronous", help="durability: OFF, NORMAL, FULL or EXTRA"
    )
    run.add_argument("--heartbeat", dest="heartbeat_interval", type=float)
    run.add_argument("--heartbeat-deadline", dest="heartbeat_deadline", type=float)
    run.add_argument("--hello-timeout", dest="hello_timeout", type=float)
    run.add_argument("--drain-timeout", dest="drain_timeout", type=float)
    run.add_argument("--outbound-limit", dest="outbound_limit", type=int)
    run.add_argument("--allowed-origin", dest="allowed_origins", action="append")
    run.add_argument(
        "--no-metrics", dest="metrics", action="store_const", const=False, help="no /metrics"
    )
    return run


def _load(parsed: argparse.Namespace) -> LoadedConfig | None:
    flags: dict[str, Any] = {
        key: value for key, value in vars(parsed).items() if key in SECTION_OF and value is not None
    }
    from server.ops.supervisor import INTERNAL_ENV  # a worker's marks are not settings

    env = {name: value for name, value in os.environ.items() if name not in INTERNAL_ENV}
    try:
        return load_config(parsed.config_path, env, flags)
    except ConfigError as exc:
        lines = [f"  {key}: {problem}" if key else f"  {problem}" for key, problem in exc.problems]
        print("hibiki: invalid configuration:", *lines, sep="\n", file=sys.stderr)
        return None


def _serve(parsed: argparse.Namespace, argv: list[str]) -> int:
    loaded = _load(parsed)
    if loaded is None:
        return EXIT_USAGE
    # Imported here: `config show` needs none of the server.
    from server.app import StartupError
    from server.ops.logs import configure_logging
    from server.ops.supervisor import WORKER_ENV, refusal

    worker = WORKER_ENV in os.environ
    if not worker and (why := refusal(loaded.config, dict(os.environ))):
        print(f"hibiki: {why}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(loaded.config.ops.log_level, loaded.config.ops.log_format)
    if loaded.config.server.workers > 1 and not worker:
        return _supervise(loaded.config, argv)
    failures: list[BaseException] = []
    try:
        trio.run(_run_until_signal, loaded.config, worker)
    except* StartupError as failed:  # raised inside nurseries, so it may come in a group
        failures = _leaves(failed)
    if failures:
        print(f"hibiki: {failures[0]}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def _supervise(config: Config, argv: list[str]) -> int:
    from server.ops.supervisor import Supervisor, WorkerStartFailed

    failures: list[BaseException] = []
    try:
        trio.run(_until_signal, Supervisor(config, argv).run, False)
    except* WorkerStartFailed as failed:
        failures = _leaves(failed)
    if failures:
        print(f"hibiki: {failures[0]}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


async def _run_until_signal(config: Config, worker: bool = False) -> None:
    from server.app import serve

    await _until_signal(lambda stop: serve(config, stop), worker)


async def _until_signal(run: Callable[[trio.Event], Awaitable[None]], absorb: bool) -> None:
    """`run(stop)`, with `stop` set at the first SIGINT or SIGTERM. With `absorb`, later ones
    are ignored (a worker: systemd signals the whole cgroup and the supervisor forwards too),
    else they get the default action again (a second Ctrl-C ends the process at once)."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    stop.set()
                    if not absorb:
                        return

        nursery.start_soon(watch_signals)
        await run(stop)
        nursery.cancel_scope.cancel()


def _config_show(parsed: argparse.Namespace) -> int:
    loaded = _load(parsed)
    if loaded is None:
        return EXIT_USAGE
    sys.stdout.write(to_toml(loaded))
    return 0


def _backup(parsed: argparse.Namespace) -> int:
    loaded = _load(parsed)
    if loaded is None:
        return EXIT_USAGE
    from storage import StorageError, backup

    try:
        result = backup(loaded.config.storage.db_path, parsed.dest)
    except StorageError as exc:  # a BackupError, or a database URL it cannot back up
        print(f"hibiki: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(
        f"backed up {loaded.config.storage.db_path} to {result.dest}: "
        f"{result.pages} pages, {result.bytes} bytes in {result.seconds:.2f} s"
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _migrate(parsed: argparse.Namespace) -> int:
    """Exit 0 when the target verifies equal, 1 on a mismatch, a refusal or a failure."""
    from storage import StorageError
    from storage.migrate import DEFAULT_CHUNK_ROWS, migrate, render, terminal_progress

    try:
        result = migrate(
            parsed.source,
            parsed.target,
            verify_only=parsed.verify_only,
            chunk_rows=parsed.chunk or DEFAULT_CHUNK_ROWS,
            progress=terminal_progress(quiet=parsed.quiet),
        )
    except StorageError as exc:  # MigrationRefused among them: nothing was written
        print(f"hibiki migrate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(render(result))
    return 0 if result.ok else EXIT_FAILURE


def _shards(parsed: argparse.Namespace) -> int:
    loaded = _load(parsed)
    if loaded is None:
        return EXIT_USAGE
    return shards_cli.run(parsed, loaded.config)


def _chat(argv: list[str]) -> int:
    try:
        terminal = importlib.import_module("client.terminal")
    except ModuleNotFoundError as exc:
        if exc.name not in ("client", "client.terminal"):
            raise
        print("hibiki: the chat client is not installed (no client.terminal)", file=sys.stderr)
        return EXIT_USAGE
    return int(terminal.main(argv))


if __name__ == "__main__":
    sys.exit(main())

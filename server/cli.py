"""`hibiki` command line: `hibiki serve` runs the server until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from .app import serve
from .config import Config, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hibiki", description="hibiki chat server")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the chat server (HTTP and WebSocket on one port)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--db", dest="db_path", help="SQLite file")
    run.add_argument("--server-id", dest="server_id")
    run.add_argument("--log-level", dest="log_level")
    run.add_argument(
        "--rate-limit",
        dest="rate_per_second",
        type=float,
        help="messages per second per user (0 disables)",
    )
    run.add_argument("--rate-burst", dest="rate_burst", type=float)
    run.add_argument("--synchronous", dest="sqlite_synchronous", help="SQLite synchronous mode")
    run.add_argument("--heartbeat", dest="heartbeat_interval", type=float)
    run.add_argument("--heartbeat-deadline", dest="heartbeat_deadline", type=float)
    run.add_argument("--hello-timeout", dest="hello_timeout", type=float)
    run.add_argument("--outbound-limit", dest="outbound_limit", type=int)
    run.add_argument("--allowed-origin", dest="allowed_origins", action="append")
    return parser


async def _run_until_signal(config: Config) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    stop.set()
                    return

        nursery.start_soon(watch_signals)
        await serve(config, stop)
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    if "allowed_origins" in values:
        values["allowed_origins"] = tuple(values["allowed_origins"])
    try:
        config = Config.from_mapping(values)
    except ConfigError as exc:
        print(f"hibiki: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    trio.run(_run_until_signal, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

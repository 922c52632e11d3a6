"""`hibiki shards status`, `move L --to URL`, `pin ROOM --to URL` and `unpin ROOM`
(docs/operations.md, "Shards").

Each reads the same settings as `serve` (`--config`, `--db` the catalog, `--db-shard` each
shard database), so the tool knows the URLs the directory's targets stand for. `move` and `pin`
refuse a target that is not among the shard databases: every node must list it first. `unpin`
takes the room back to the database the directory places its logical shard on.
"""

from __future__ import annotations

import argparse
import sys

from server.config import Config

EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    settings: argparse.ArgumentParser,
) -> None:
    shards = commands.add_parser("shards", help="the message shards: status, online moves")
    actions = shards.add_subparsers(dest="shards_command", required=True)
    actions.add_parser("status", parents=[settings], help="the directory and each database's size")
    move = actions.add_parser(
        "move", parents=[settings], help="move a logical shard to another database, online"
    )
    move.add_argument("logical", type=int, metavar="L", help="the logical shard (0-255)")
    move.add_argument("--to", dest="to_url", required=True, metavar="postgresql://...")
    pin = actions.add_parser(
        "pin", parents=[settings], help="move one room onto another database, online"
    )
    pin.add_argument("room", help="the room's name")
    pin.add_argument("--to", dest="to_url", required=True, metavar="postgresql://...")
    unpin = actions.add_parser(
        "unpin", parents=[settings], help="move a pinned room back to its logical shard, online"
    )
    unpin.add_argument("room", help="the room's name")


def run(parsed: argparse.Namespace, config: Config) -> int:
    from storage import StorageError
    from storage.postgres._connection import target_of

    storage = config.storage
    if not storage.shards:
        print("hibiki shards: no shard databases configured ([storage] shards)", file=sys.stderr)
        return EXIT_USAGE
    urls = {target_of(url): url for url in storage.shards}
    try:
        if parsed.shards_command == "status":
            return _status(storage.db_path, urls)
        if parsed.shards_command == "unpin":
            return _unpin(storage.db_path, urls, parsed.room)
        if target_of(parsed.to_url) not in urls:
            print(
                f"hibiki shards: {target_of(parsed.to_url)} is not a shard database: add it to"
                " [storage] shards on every node first",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if parsed.shards_command == "pin":
            return _pin(storage.db_path, urls, parsed.room, parsed.to_url)
        return _move(storage.db_path, urls, parsed.logical, parsed.to_url)
    except StorageError as exc:
        print(f"hibiki shards: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _status(catalog: str, urls: dict[str, str]) -> int:
    from storage.routing.shard_status import status

    found = status(catalog, urls)
    print(f"directory version {found.version}")
    print(
        f"{'database':<40} {'logical':>7} {'pinned':>6} {'owned':>5} {'rooms':>7}"
        f" {'messages':>10} {'bytes':>12}"
    )
    for d in found.databases:
        print(
            f"{d.target:<40} {d.logical:>7} {d.pinned:>6} {d.owned:>5} {d.rooms:>7}"
            f" {d.messages:>10} {d.bytes:>12}"
        )
    print(f"pinned rooms: {len(found.pins)}")
    if found.pins:
        print(f"{'room':<32} {'logical':>7} {'database':<40} {'messages':>10}")
    for p in found.pins:
        print(f"{p.room:<32} {p.logical:>7} {p.target:<40} {p.messages:>10}")
    print("logical shards (rooms and messages on the database the directory names):")
    print(f"{'logical':>7} {'database':<40} {'rooms':>7} {'messages':>10}")
    for shard, (target, sizes) in found.logical.items():
        print(f"{shard:>7} {target:<40} {sizes.rooms:>7} {sizes.messages:>10}")
    return 0


def _move(catalog: str, urls: dict[str, str], logical: int, to_url: str) -> int:
    from storage.routing.move import move_logical
    from storage.routing.shards import LOGICAL_SHARDS

    if not 0 <= logical < LOGICAL_SHARDS:
        print(f"hibiki shards: L must be 0..{LOGICAL_SHARDS - 1}", file=sys.stderr)
        return EXIT_USAGE
    result = move_logical(catalog, urls, logical, to_url)
    print(
        f"moved logical shard {result.logical} from {result.source} to {result.target}:"
        f" {result.rooms} rooms, {result.messages} messages"
        f" ({result.delta} of them since the bulk copy)"
        f" in {result.seconds:.2f} s, writers held {result.hold_seconds * 1000:.1f} ms;"
        f" directory version {result.version}"
    )
    return 0


def _pin(catalog: str, urls: dict[str, str], room: str, to_url: str) -> int:
    from storage.routing.pin import pin_room

    result = pin_room(catalog, urls, room, to_url)
    print(
        f"pinned room {room!r} (logical shard {result.logical}) from {result.source} to"
        f" {result.target}: {result.messages} messages ({result.delta} of them since the bulk"
        f" copy) in {result.seconds:.2f} s, writers held {result.hold_seconds * 1000:.1f} ms;"
        f" directory version {result.version}"
    )
    return 0


def _unpin(catalog: str, urls: dict[str, str], room: str) -> int:
    from storage.routing.pin import unpin_room

    result = unpin_room(catalog, urls, room)
    print(
        f"unpinned room {room!r} (logical shard {result.logical}) from {result.source} back to"
        f" {result.target}: {result.messages} messages ({result.delta} of them since the bulk"
        f" copy) in {result.seconds:.2f} s, writers held {result.hold_seconds * 1000:.1f} ms;"
        f" directory version {result.version}"
    )
    return 0

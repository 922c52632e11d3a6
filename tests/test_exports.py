"""Each package's public surface, pinned (as trio's test_exports): a name joins or leaves `__all__`
only by changing this file. `storage` pins its own surface in tests/storage.

Also: the server's parts import each other without a cycle, so each can be read, tested and
replaced from the bottom up (transport, ops; fanout; persist; chat; http beside them).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = {
    "protocol": {
        "Ack",
        "Ban",
        "Invite",
        "Kick",
        "MemberUpdated",
        "Removed",
        "RoomUpdate",
        "RoomUpdated",
        "SetRole",
        "Transfer",
        "Unban",
        "ChatError",
        "CloseCode",
        "DEFAULT_MAX_TEXT",
        "DEFAULT_SEARCH_LIMIT",
        "Delete",
        "Deleted",
        "Edit",
        "Edited",
        "EVENT_TYPES",
        "Error",
        "ErrorCode",
        "Event",
        "Hello",
        "HistoryPage",
        "HistoryRequest",
        "Join",
        "Joined",
        "Leave",
        "Left",
        "MAX_HISTORY_LIMIT",
        "MAX_QUERY_LENGTH",
        "MAX_RESUME_ROOMS",
        "MAX_SEARCH_LIMIT",
        "Message",
        "PROTOCOL_VERSION",
        "Ping",
        "Pong",
        "Presence",
        "ProtocolError",
        "REQUEST_TYPES",
        "ROOM_PATTERN",
        "ReadRequest",
        "Request",
        "Resync",
        "RoomCreated",
        "RoomEntry",
        "RoomUnread",
        "SearchRequest",
        "SearchResults",
        "Send",
        "Typing",
        "TypingRequest",
        "Unread",
        "Welcome",
        "decode",
        "decode_event",
        "decode_search_cursor",
        "encode",
        "encode_search_cursor",
        "query_words",
        "refused_character",
    },
    "client": {
        "ApiError",
        "AuthenticationError",
        "Backoff",
        "ChatClient",
        "ChatClientError",
        "ClientClosed",
        "ClientEvent",
        "Disconnected",
        "LoginError",
        "LoginSession",
        "RequestError",
        "RoomInfo",
        "UnreadCounter",
        "UserInfo",
        "open_websocket",
    },
    "server": {"Config", "ConfigError", "LoadedConfig", "load_config", "serve"},
    "server.transport": {
        "Flusher",
        "HandshakeError",
        "Listener",
        "OutboundBuffer",
        "Segment",
        "WsConnection",
        "accept_response",
        "origin_allowed",
        "ping_frame",
        "pong_frame",
        "reject",
        "shutdown_write",
        "text_frame",
    },
    "server.chat": {
        "ChatConnection",
        "ChatServices",
        "ConnState",
        "ConnectionRegistry",
        "MembershipSync",
        "Reaper",
        "UserRateLimiter",
        "serve_websocket",
    },
    "server.events": {
        "MESSAGE_CREATED",
        "Deduper",
        "EventAppender",
        "EventConsumer",
        "MessageCreated",
        "SearchIndex",
        "ShardedEventAppender",
        "StreamAppender",
        "StreamEvent",
        "build_event_appender",
        "partition_of",
        "stream_key",
    },
    "server.fanout": {"RoomHub"},
    "server.persist": {"MessageWriter", "PendingSend"},
    "server.redis": {
        "Address",
        "ClusterUrl",
        "RedisBus",
        "RedisFaults",
        "RedisLink",
        "RedisUnavailable",
        "SlotMap",
        "parse_cluster_url",
    },
    "server.http": {
        "HttpBridge",
        "HttpServices",
        "ReplayStream",
        "content_security_policy",
        "create_http_app",
    },
    "server.ops": {
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
    },
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_public_surface_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(getattr(module, "__all__", ()))
    assert len(exported) == len(set(exported)), "a name is listed twice"
    assert set(exported) == PUBLIC[package]
    for name in exported:
        assert hasattr(module, name), name
        assert not name.startswith("_"), name


def test_importing_server_config_does_not_start_the_whole_server() -> None:
    # `hibiki config show` imports the config only; `server.serve` loads the rest when asked.
    code = (
        "import sys, server.config, server\n"
        "assert 'server.app' not in sys.modules, 'server.app imported'\n"
        "assert server.serve.__module__ == 'server.app'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def _part(module: str) -> str:
    """`server.chat.session` -> `server.chat`; top-level modules (`server.app`) are their own."""
    parts = module.split(".")
    if len(parts) > 2 or (ROOT / Path(*parts)).is_dir():
        return ".".join(parts[:2])
    return module


def _server_imports() -> dict[str, set[str]]:
    """Part -> parts it imports (at run time or for type checking), from the source."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in (ROOT / "server").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        importer = _part(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("server.") and _part(name) != importer:
                    graph[importer].add(_part(name))
    return graph


def test_server_parts_import_each_other_without_a_cycle() -> None:
    graph = _server_imports()
    assert "server.chat" in graph["server.assembly"]  # the walk sees imports at all

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()) - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    cyclic = sorted(part for part in graph if reaches(part, part, set()))
    assert cyclic == [], {part: sorted(graph[part]) for part in cyclic}

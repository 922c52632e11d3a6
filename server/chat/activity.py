"""When each session was last used and each user last seen (issue #15), written in batches.

Nothing here writes per message or per request. `ActivityRecorder` keeps what it was told in
memory and writes it in one store call (`record_activity`, one transaction):
- every `interval` seconds (`ACTIVITY_INTERVAL`, 60): each open WebSocket's session and user, and
  what authenticated HTTP requests were seen since (each session and user at most once per
  interval: `seen`);
- at once when a user's last WebSocket on this process closes (`connection_closed`): their
  `last_seen` is the moment the connection went away, and its session's last use too;
- once more as the process stops (shielded, bounded by `FINAL_FLUSH_TIMEOUT`).
So a `last_seen` is at most `interval` old while a user is connected, exact when they leave, and
one write per node per interval however busy the chat is (cut into `CHUNK_ROWS`-row store calls,
so a node with many connections never holds the database's writer for long). A failed write is
logged (once per episode) and dropped: the next one carries later times (times only ever move
forward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio
from cachetools import TTLCache

from server.chat.connection import ChatConnection, ConnState
from server.chat.user_connections import UserConnections
from server.ops.log_throttle import LogThrottle
from storage import AccountStore, StorageError
from storage.accounts import wall_clock_ms

ACTIVITY_INTERVAL = 60.0  # seconds: how stale a last use or last_seen may be while active
FINAL_FLUSH_TIMEOUT = 2.0  # seconds the last write may take as the process stops
# Rows (sessions + users) per store call: SQLite's one writer also commits the messages, so a
# flush of 20,000 connections' rows is cut into ~10 ms writes that message batches go between.
CHUNK_ROWS = 1_000
_log = logging.getLogger(__name__)


class ActivityRecorder:
    def __init__(
        self,
        store: AccountStore,
        open_connections: Callable[[], Iterable[ChatConnection]],
        connections: UserConnections,
        *,
        interval: float = ACTIVITY_INTERVAL,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._store = store
        self._open = open_connections
        self._connections = connections
        self._interval = interval
        self._clock_ms = clock_ms
        self._sessions: dict[str, int] = {}  # token hash -> ms, waiting for the next write
        self._users: dict[int, int] = {}  # user id -> ms
        # What `seen` recorded within the interval: not recorded again until it runs out.
        self._recent: TTLCache[str | int, None] = TTLCache(
            maxsize=100_000, ttl=interval, timer=trio.current_time
        )
        self._wake = trio.Event()
        self._failures = LogThrottle(_log, "activity writes", first_level=logging.WARNING)
        self.writes = 0  # store calls made (tests and metrics read it)

    def seen(self, user_id: int, token_hash: str) -> None:
        """An authenticated HTTP request of `user_id` with the token of `token_hash`."""
        now = self._clock_ms()
        for key in (token_hash, user_id):
            if key not in self._recent:
                self._recent[key] = None
                if isinstance(key, str):
                    self._sessions[key] = now
                else:
                    self._users[key] = now

    def connection_closed(self, conn: ChatConnection) -> None:
        """`conn` takes no more part in the chat (after its session released it)."""
        if not conn.user_id:
            return  # never authenticated
        now = self._clock_ms()
        self._sessions[conn.token_hash] = now
        if not self._connections.of_user(conn.user_id):
            self._users[conn.user_id] = now
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self._interval) as timer:
                    await self._wake.wait()
                self._wake = trio.Event()
                if timer.cancelled_caught:
                    self._note_open_connections()
                await self.flush()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH_TIMEOUT):
                await self.flush()

    async def flush(self) -> None:
        """Write what is waiting, `CHUNK_ROWS` rows per store call (nothing if nothing waits)."""
        sessions, users = list(self._sessions.items()), list(self._users.items())
        self._sessions, self._users = {}, {}
        while sessions or users:
            part_sessions = dict(sessions[:CHUNK_ROWS])
            del sessions[:CHUNK_ROWS]
            room = CHUNK_ROWS - len(part_sessions)
            part_users = dict(users[:room])
            del users[:room]
            self.writes += 1
            try:
                await self._store.record_activity(part_sessions, part_users)
            except StorageError as exc:
                self._failures.occurred(
                    "failed", "recording last use and last_seen failed: %s", exc
                )
            else:
                self._failures.recovered()

    def _note_open_connections(self) -> None:
        now = self._clock_ms()
        for conn in self._open():
            if conn.state is ConnState.OPEN and conn.user_id:
                self._sessions[conn.token_hash] = now
                self._users[conn.user_id] = now

"""An opt-in debug instrument (`[ops] stage_trace = PATH`): where each message's latency goes.

Per committed message one line of CLOCK_MONOTONIC microseconds (the clock the load generator
stamps its messages with, so its send time is comparable): the client's send (parsed from a
`lg:<sender>:<seq>:<µs>:` text, else 0), the server's read (the reader's `queued_at`), commit
start and end (trio side, so the thread hand-off is inside), published (acks and frames queued)
and sent (the sweep that wrote them: inline in the writer's turn, or the flusher task's next);
on SQLite then the writer thread's own: job start, COMMIT issued, job end (the store's append
job is wrapped, and a statement trace set on its connection, while it runs).
Besides, one line per cyclic-GC pass with its start, end and generation. The file is written
when the server stops. `scripts/bench_latency_stages.py`
reads the file. Off (the default), nothing here is on any path: the server builds the plain
`MessageWriter` and `Flusher`.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TextIO

import trio

from server.persist.writer import MessageWriter, PendingSend
from server.transport.flusher import Flusher
from server.transport.outbound import OutboundBuffer
from storage import Appended
from storage.sqlite import _messages as sqlite_messages


class StageTrace:
    """Collects the stamps and writes them, buffered, to its file (closed when the server stops)."""

    def __init__(self, path: str) -> None:
        self._file: TextIO = open(path, "w", buffering=1 << 20)  # noqa: SIM115  see close()
        self._unsent: list[list[int]] = []  # published, waiting for the sweep that sends them
        self._gc_started = 0
        gc.callbacks.append(self._on_gc)
        # On SQLite, the writer thread's own times: job start, COMMIT issued, job end.
        self._in_thread = [0, 0, 0]
        self._unwrapped = sqlite_messages.append_batch
        sqlite_messages.append_batch = self._stamped(self._unwrapped)

    def close(self) -> None:
        """Write what is buffered and stop stamping (the flusher's end: the server's)."""
        gc.callbacks.remove(self._on_gc)
        sqlite_messages.append_batch = self._unwrapped
        self.swept()
        self._file.close()

    def _stamped(self, job: Callable[..., list[Appended]]) -> Callable[..., list[Appended]]:
        stamps = self._in_thread

        def on_statement(sql: str) -> None:
            if sql == "COMMIT":
                stamps[1] = time.monotonic_ns() // 1000

        def run(conn: sqlite3.Connection, *args: Any) -> list[Appended]:
            conn.set_trace_callback(on_statement)
            stamps[0] = time.monotonic_ns() // 1000
            try:
                return job(conn, *args)
            finally:
                stamps[2] = time.monotonic_ns() // 1000
                conn.set_trace_callback(None)

        return run

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic_ns() // 1000
        if phase == "start":
            self._gc_started = now
        else:
            self._file.write(f"gc {self._gc_started} {now} {info['generation']}\n")

    def published(self, batch: list[PendingSend], started: float, ended: float) -> None:
        """`batch` was committed from `started` to `ended` (perf_counter: CLOCK_MONOTONIC)."""
        offset = trio.lowlevel.current_clock().current_time() - time.perf_counter()  # trio's
        now = time.monotonic_ns() // 1000
        in_thread = list(self._in_thread)
        self._in_thread[:] = [0, 0, 0]
        for item in batch:
            read = int((item.queued_at - offset) * 1e6) if item.queued_at else 0
            client = _client_sent(item.message.text)
            self._unsent.append(
                [client, read, int(started * 1e6), int(ended * 1e6), now, *in_thread]
            )

    def swept(self) -> None:
        """A sweep has just sent every queued frame: the published messages are on the wire."""
        if not self._unsent:
            return
        now = time.monotonic_ns() // 1000
        write = self._file.write
        for stamps in self._unsent:
            stamps.insert(5, now)
            write("m " + " ".join(map(str, stamps)) + "\n")
        self._unsent.clear()


def _client_sent(text: str) -> int:
    parts = text.split(":", 4)
    if len(parts) == 5 and parts[0] == "lg" and parts[3].isdigit():
        return int(parts[3])
    return 0


class TracedWriter(MessageWriter):
    """The writer, telling `trace` when each batch was committed and published."""

    def __init__(self, trace: StageTrace, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace = trace
        self._commit_span = (0.0, 0.0)

    def committed(self, batch: list[PendingSend], results: list[Appended], *args: Any) -> None:
        self._commit_span = (args[0], time.perf_counter())
        super().committed(batch, results, *args)

    def _deliver(self, batch: list[PendingSend], results: list[Appended]) -> None:
        super()._deliver(batch, results)
        self.trace.published(batch, *self._commit_span)


class TracedFlusher(Flusher):
    """The flusher, telling `trace` after each of its sweeps (its own and the writer's)."""

    def __init__(self, trace: StageTrace, *, lead_rounds: int = 0) -> None:
        super().__init__(lead_rounds=lead_rounds)
        self.trace = trace

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            self.trace.close()

    def _flush_all(self, dirty: list[OutboundBuffer]) -> None:
        super()._flush_all(dirty)
        self.trace.swept()

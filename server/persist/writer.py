"""The message writer: drains the send queue, commits each batch in one transaction, then
publishes and acks. Nothing is delivered before it is durable. A lone send (nothing else
submitted and not yet committed) may instead be committed inside `submit`, in its reader's turn,
when the store can do it without yielding (`AppendsNow`): light load then costs no writer step.

After each commit the writer runs its sinks in commit order: the bus first (each message, as it
acks), then every `CommitSink` (`after_commit`, e.g. the event stream) with the batch's newly
stored messages. With no `after_commit` sink the hot path is what it was: one test per batch."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import trio

from protocol import Ack, Error, ErrorCode, Event, Message, RoomEntry, encode
from server.fanout.bus import MessageSink
from server.ops.log_throttle import Line, LogThrottle, Wording
from server.ops.metrics import Metrics
from server.persist.shard_commit import ShardCommits, ShardedAppend
from storage import Appended, Conflict, MessageStore, NewMessage, NotFound, StorageError


class CommitSink(Protocol):
    """Runs after each commit, after the bus: never awaits (a sink that does I/O queues)."""

    def committed(self, messages: Sequence[Message]) -> None:
        """`messages` were just committed (duplicates left out), in commit order."""


class DeliverySweep(Protocol):
    """Sends what a delivery queued (the flusher): told before and after each batch's."""

    def defer_wake(self) -> None: ...

    def end_deferral(self) -> None: ...


@runtime_checkable
class AppendsNow(Protocol):
    """A store that may commit a batch without yielding (SQLite on the loop, when idle)."""

    def append_now(self, batch: Sequence[NewMessage]) -> list[Appended] | None:
        """The batch's results if committed now; None if it must go through `append_batch`."""
        ...


class AckTarget(Protocol):
    """Where a send's ack or refusal goes (the sending connection)."""

    def send_event(self, event: Event) -> None: ...

    @property
    def signed_out(self) -> bool:
        """Closed because its token was revoked or expired: its sends not yet committed are
        void (a logout promises nothing of the token's is stored once answered)."""
        ...


@dataclass(frozen=True, slots=True)
class PendingSend:
    message: NewMessage
    sender: AckTarget | None
    ref: str | None
    # trio.current_time() when the send was accepted (0: not known), for the send-latency metric;
    # the sender passes the time it already read for the rate limit, so stamping costs nothing.
    queued_at: float = 0.0


_log = logging.getLogger(__name__)
# A failed batch is logged with its traceback once per kind (same error and message) in an
# outage, then counted as one ("still failing"), and its end is one line.
_STORED_AGAIN = Line(
    logging.WARNING,
    "%(what)s are being stored again after %(failures)d failures",
    {"failures": "failures"},
)
OUTAGE_WORDING = Wording(
    repeated=Line(
        logging.ERROR,
        "%(what)s still failing: %(repeats)d in the last %(elapsed).0f s",
        {"failures": "repeats", "seconds": "seconds"},
    ),
    recovered=_STORED_AGAIN,
    recovered_quiet=_STORED_AGAIN,
    first_fields=(),
    one_count=True,
)


def _throttle(what: str) -> LogThrottle:
    """A failure log for `what`: a full disk fails every batch: one traceback, then a count
    every 10 s, then one line."""
    return LogThrottle(
        _log, what, first_level=logging.ERROR, traceback=True, wording=OUTAGE_WORDING
    )


class MessageWriter:
    def __init__(
        self,
        store: MessageStore,
        bus: MessageSink,
        *,
        queue_size: int,
        max_batch: int,
        metrics: Metrics | None = None,
        after_commit: Sequence[CommitSink] = (),
        sweep: DeliverySweep | None = None,
    ) -> None:
        self._store = store
        self._sweep = sweep
        self._bus = bus
        self._after_commit = tuple(after_commit)
        self._max_batch = max_batch
        self._metrics = Metrics() if metrics is None else metrics
        self._send, self._receive = trio.open_memory_channel[PendingSend](queue_size)
        self.finished = trio.Event()
        # For readiness (trio clock): the database is writable unless the last commit failed.
        self.last_commit_ok_at = -math.inf
        self.last_commit_failed_at = -math.inf
        self.last_commit_error = ""
        self._failures = _throttle("message batches")
        self._by_shard = (
            ShardCommits(store, self, self._metrics, _throttle)
            if isinstance(store, ShardedAppend)
            else None
        )
        self._append_now = (
            store.append_now if self._by_shard is None and isinstance(store, AppendsNow) else None
        )
        self._in_hand = 0  # submitted and not yet committed (or refused): queued or in a batch
        self._closed = False

    async def submit(self, item: PendingSend, *, last: bool = False) -> None:
        """Queue a message for the next batch; waits (backpressure) while the queue is full.

        While the queue has room this does not yield: a reader admits every message one `recv`
        gave it (up to its `admit_per_turn`, after which it yields) before the writer runs, so a
        batch holds many senders' messages and a room's frames share one flush. It still raises
        `Cancelled` in a cancelled scope (the drain stops readers by cancelling them, then closes
        this input in the same step), and a full queue is a real wait, in arrival order.

        `last`: nothing more is in the reader's hands. Such a send, with nothing else submitted
        and not yet committed, is a lone send: if the store can commit it without yielding it
        is committed, published and acked here, in the reader's turn, not one writer task step
        later (at light load that step was a quarter of a send's wait: stage `queued`).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if last and not self._in_hand and self._append_now is not None and self._now(item):
            return
        self._in_hand += 1
        try:
            try:
                self._send.send_nowait(item)
            except trio.WouldBlock:
                await self._send.send(item)
        except BaseException:  # not queued (closed, cancelled while full)
            self._in_hand -= 1
            raise

    def _now(self, item: PendingSend) -> bool:
        """Commit a lone send now if the store can without yielding; False: queue it."""
        assert self._append_now is not None
        if self._closed:
            return False  # the queue refuses it as it would any other (ClosedResourceError)
        if item.sender is not None and item.sender.signed_out:
            return True  # void, as in `commit_batch`
        started = time.perf_counter()
        try:
            results = self._append_now((item.message,))
        except StorageError as exc:
            self.failed([item], exc)
            return True
        if results is None:
            return False
        self.committed([item], results, started)
        return True

    def queue_depth(self) -> int:
        return self._receive.statistics().current_buffer_used

    def close_input(self) -> None:
        """No more submissions: the writer commits what is queued, then `run` returns."""
        self._closed = True
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        receive = self._receive
        # A batch taken off the queue is committed and delivered even if we are being
        # cancelled: its senders may already be waiting for their acks. One scope, shielded
        # only while a batch is in hand: entering a new one per batch cost ~4% of a light-load
        # message (callgrind).
        # Under load (the last batch held more than one message) the writer lets one scheduling
        # round pass before it takes its batch: the readers ready in it (data that arrived while
        # the flusher swept) admit their frames first, so the batch, and each room's segment
        # in the sweep after it, holds about twice as many (100 rooms x 50, 4 senders: ~200 ->
        # ~380 messages per batch, ~1.3x less CPU per delivery; scripts/bench_batching.py). At
        # light load a lone send does not come here (`submit`), and a batch of one does not wait.
        loaded = False
        try:
            with trio.CancelScope() as commit_scope:
                while True:
                    commit_scope.shield = False
                    try:
                        first = await receive.receive()
                    except trio.EndOfChannel:
                        return
                    commit_scope.shield = True
                    if loaded:  # let the readers that are ready admit theirs first
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    batch = [first]
                    while len(batch) < self._max_batch:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    loaded = len(batch) > 1
                    try:
                        await self.commit_batch(batch)
                    finally:
                        self._in_hand -= len(batch)
        finally:
            self.finished.set()

    async def commit_batch(self, batch: list[PendingSend]) -> None:
        # Read on the trio thread just before the commit begins, like the revocation that sets
        # it: a send is stored only if its commit began before its token's revocation arrived.
        batch = [item for item in batch if item.sender is None or not item.sender.signed_out]
        if not batch:
            return
        if self._by_shard is not None:  # each shard's part is delivered as it commits
            await self._by_shard.commit(batch)
            return
        commit_started = time.perf_counter()
        try:
            results = await self._store.append_batch([item.message for item in batch])
        except StorageError as exc:
            self.failed(batch, exc)
            return
        self.committed(batch, results, commit_started)

    def failed(
        self, batch: list[PendingSend], exc: StorageError, failures: LogThrottle | None = None
    ) -> None:
        """`batch` was not stored, so not acked: tell each sender, who may retry with the same
        client_id. Logged through `failures` (the writer's own by default; one per shard)."""
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        (self._failures if failures is None else failures).occurred(
            kind, "message batch of %d could not be stored", len(batch), exc=exc
        )
        self._metrics.writer_commit_failures += 1
        if not isinstance(exc, NotFound | Conflict):  # those are not the database failing
            self.last_commit_failed_at = trio.current_time()
            self.last_commit_error = str(exc)
        for item in batch:
            if item.sender is not None:
                item.sender.send_event(
                    Error(code=ErrorCode.UNAVAILABLE, message="not stored", ref=item.ref)
                )

    def committed(
        self,
        batch: list[PendingSend],
        results: list[Appended],
        started: float,
        failures: LogThrottle | None = None,
    ) -> None:
        """`batch` is durable (its commit began at `started`, perf_counter): publish and ack."""
        metrics = self._metrics
        committed = time.perf_counter()
        self.last_commit_ok_at = trio.current_time()
        (self._failures if failures is None else failures).recovered()
        metrics.commit_seconds.observe(committed - started)
        metrics.batch_size.observe(len(batch))
        self.deliver(batch, results)
        delivered = time.perf_counter()
        metrics.fanout_seconds.observe(delivered - committed)
        oldest = batch[0].queued_at
        if oldest:
            metrics.send_latency_seconds.observe(trio.current_time() - oldest)

    def deliver(self, batch: list[PendingSend], results: list[Appended]) -> None:
        sweep = self._sweep
        if sweep is None:
            self._deliver(batch, results)
            return
        # The batch's frames and acks are sent right after it is published (when small and the
        # flusher idle), not one task step later by the flusher.
        sweep.defer_wake()
        try:
            self._deliver(batch, results)
        finally:
            sweep.end_deferral()

    def _deliver(self, batch: list[PendingSend], results: list[Appended]) -> None:
        stored = 0
        for item, result in zip(batch, results, strict=True):
            message = result.message
            if not result.duplicate:
                stored += 1
                self._publish(message)
            sender = item.sender
            if sender is not None:
                sender.send_event(_ack(message, result.duplicate, item.ref))
        self._metrics.messages += stored
        if self._after_commit:  # edits and deletes are not given to the sinks (yet)
            self._run_sinks(
                [r.message for r in results if not r.duplicate and type(r.message) is Message]
            )

    def publish_stored(self, messages: Sequence[Message]) -> None:
        """Deliver messages stored by someone else (the HTTP batch import) like our own."""
        for message in messages:
            self._publish(message)
        self._metrics.messages += len(messages)
        if self._after_commit:
            self._run_sinks(messages)

    def _run_sinks(self, messages: Sequence[Message]) -> None:
        for sink in self._after_commit:
            sink.committed(messages)

    def _publish(self, message: RoomEntry) -> None:
        # Encoded once, here; every process's hub frames it once for all its subscribers.
        self._bus.publish_message(message.room, message.seq, encode(message))


def _ack(message: RoomEntry, duplicate: bool, ref: str | None) -> Ack:
    # An edit or delete is acked with the id of the message it changed and its own seq.
    return Ack(
        room=message.room,
        id=message.id,
        seq=message.seq,
        client_id=message.client_id,
        duplicate=duplicate,
        ref=ref,
    )

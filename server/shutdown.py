"""Shutdown in one place: the drain's state, and its steps in their order.

When `stop` is set (SIGTERM), `Drain.run`, bounded by `drain_timeout`:

1. tells systemd STOPPING=1 and logs `draining`;
2. stops every WebSocket reading (from here /readyz is 503 and new upgrades get 503);
3. closes the writer's input and waits until it has committed and acked what was queued;
4. lets each WebSocket handler close its socket with 1001 (they wait for step 3, so the last
   acks go out first), and waits until every handler has returned;
5. then, deadline or not: stops hypercorn's keep-alive, stops accepting, stops the HTTP app,
   cancels the task tree, and logs `drained` or `drain timed out`.

The other parts only ask: `draining`, `reading(scope)`, `serving()`, `await writer_flushed()`.
Nothing here imports them (they import this), so the steps name what they need as protocols.
"""

from __future__ import annotations

import logging
from collections.abc import Sized
from types import TracebackType
from typing import Protocol

import trio

from server.ops import sdnotify

# The process's lifecycle lines ("listening", "draining", "drained", "stopped") share one logger,
# which operators filter on (docs/deploy.md).
_log = logging.getLogger("server.app")


class _Writer(Protocol):
    finished: trio.Event

    def close_input(self) -> None: ...


class _Http(Protocol):
    async def stop_keepalive(self) -> None: ...

    def stop(self) -> None: ...


class _Listener(Protocol):
    def stop_accepting(self) -> None: ...


class Drain:
    """Owns the draining flag, the readers to stop, the writer-flushed event and the count of
    open WebSocket handlers; `timeout` is `drain_timeout`."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._draining = False
        self._readers: dict[trio.CancelScope, None] = {}
        self._flushed = trio.Event()
        self._handlers = 0
        self._idle = trio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        """Shutdown has begun: refuse new WebSockets, report not ready, label closes `shutdown`."""
        return self._draining

    def reading(self, scope: trio.CancelScope) -> _Reading:
        """Run a connection's read loop in `scope`, which the drain cancels (at once if it has
        begun already)."""
        return _Reading(self._readers, scope, self._draining)

    async def writer_flushed(self) -> None:
        """Wait (at most `drain_timeout`) until the writer has acked all that was queued: a
        handler whose reading was stopped says goodbye only then."""
        with trio.move_on_after(self._timeout):
            await self._flushed.wait()

    def serving(self) -> _Serving:
        """Count a running WebSocket handler (it returns once its socket is closed)."""
        return _Serving(self)

    def _handler_started(self) -> None:
        if not self._handlers:
            self._idle = trio.Event()
        self._handlers += 1

    def _handler_finished(self) -> None:
        self._handlers -= 1
        if not self._handlers:
            self._idle.set()

    async def run(
        self,
        *,
        connections: Sized,
        writer: _Writer,
        http: _Http,
        listener: _Listener,
        root: trio.CancelScope,
    ) -> None:
        """The steps above, in order; returns with `root` cancelled."""
        started = trio.current_time()
        sdnotify.notify("STOPPING=1", "STATUS=draining connections")
        _log.info("draining", extra={"connections": len(connections)})
        with trio.move_on_after(self._timeout) as deadline:
            self._stop_reading()  # from here /readyz is 503 and upgrades are refused
            writer.close_input()
            await writer.finished.wait()
            self._flushed.set()
            await self._idle.wait()
        # Only now: hypercorn refuses new HTTP connections once told (no /readyz answer).
        await http.stop_keepalive()
        listener.stop_accepting()
        http.stop()
        root.cancel()
        extra = {"drain_s": round(trio.current_time() - started, 3)}
        if deadline.cancelled_caught:
            _log.warning("drain timed out", extra=extra | {"connections": len(connections)})
        else:
            _log.info("drained", extra=extra)

    def _stop_reading(self) -> None:
        self._draining = True
        for scope in self._readers:
            scope.cancel()


# Every open WebSocket is inside both of these for its whole life, so they are small slotted
# objects rather than @contextmanager generators (~700 bytes per connection for the two).


class _Reading:
    __slots__ = ("_readers", "_scope")

    def __init__(
        self, readers: dict[trio.CancelScope, None], scope: trio.CancelScope, draining: bool
    ) -> None:
        self._readers = readers
        self._scope = scope
        readers[scope] = None
        if draining:
            scope.cancel()

    def __enter__(self) -> trio.CancelScope:
        try:
            return self._scope.__enter__()
        except BaseException:  # a scope entered twice: leave nothing registered
            del self._readers[self._scope]
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            return self._scope.__exit__(exc_type, exc, tb)
        finally:
            del self._readers[self._scope]


class _Serving:
    __slots__ = ("_drain",)

    def __init__(self, drain: Drain) -> None:
        self._drain = drain

    def __enter__(self) -> None:
        self._drain._handler_started()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._drain._handler_finished()

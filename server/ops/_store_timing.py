"""Store calls timed into `db_query_duration_seconds`, one histogram per call of the interface."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from server.ops._histogram import DB_BUCKETS, Histogram
from storage import AccountStore, Appended, MessageStore, NewMessage, RoomStore, Store

if TYPE_CHECKING:
    from server.ops.metrics import Metrics

P = ParamSpec("P")
T = TypeVar("T")


def query_types() -> list[str]:
    """The `query_type` label values: the store interface's calls (bounded, known in advance)."""
    return [
        name
        for part in (AccountStore, RoomStore, MessageStore)
        for name, member in vars(part).items()
        if inspect.iscoroutinefunction(member)
    ]


def timed_store(store: Store, metrics: Metrics) -> Store:
    """`store`, with every call's duration observed into `db_query_duration_seconds`."""
    return cast(Store, _TimedStore(store, metrics))


class _TimedStore:
    """Forwards every attribute to the store; each query call is wrapped once, up front."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        for name in query_types():
            hist = metrics.db_query_seconds.setdefault(name, Histogram(DB_BUCKETS))
            setattr(self, name, _timed(getattr(store, name), hist))
        now = getattr(store, "append_now", None)
        if now is not None:  # a commit without yielding is timed like the batch it is
            self.append_now = _timed_now(now, metrics.db_query_seconds["append_batch"])

    def __getattr__(self, name: str) -> Any:  # only for what is not wrapped (open, aclose, probe)
        return getattr(self._store, name)


def _timed(call: Callable[P, Awaitable[T]], hist: Histogram) -> Callable[P, Awaitable[T]]:
    async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            hist.observe(time.perf_counter() - started)

    return timed


def _timed_now(
    call: Callable[[Sequence[NewMessage]], list[Appended] | None], hist: Histogram
) -> Callable[[Sequence[NewMessage]], list[Appended] | None]:
    def timed(batch: Sequence[NewMessage]) -> list[Appended] | None:
        started = time.perf_counter()
        try:
            results = call(batch)
        except BaseException:
            hist.observe(time.perf_counter() - started)
            raise
        if results is not None:  # None: nothing was done (the writer's queue takes it)
            hist.observe(time.perf_counter() - started)
        return results

    return timed

"""Requests waiting for their answers, across connections.

Rules:
- A request waits here, by `ref`, from the moment it is made until its answer (or `error`)
  arrives; the caller's task waits on it.
- It is written to the *ready* connection at once, or, while there is none, when the next one
  becomes ready: `resend()` writes every request the new connection has not carried yet, in the
  order they were made, and only then marks the connection ready, so order holds.
- A `send`, `edit` or `delete` is matched by `ref`, or by `client_id` (its idempotency key,
  kept across re-sends).
- A change (`edit`, `delete`) whose `edited`/`deleted` event was seen (live or replayed: it
  carries the `client_id`) keeps the `ack` that event amounts to in `change`: a re-sent delete is
  answered `message_deleted`, which for it means "done", and `change` is then its answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from protocol import Ack, Event, Request

from ._errors import ChatClientError

_E = TypeVar("_E", bound=Event)
_encoder = msgspec.json.Encoder()


def encode_request(request: Request) -> str:
    return _encoder.encode(request).decode()


@dataclass(eq=False)
class PendingRequest:
    ref: str
    frame: str
    client_id: str | None = None
    done: trio.Event = field(default_factory=trio.Event)
    answer: Event | None = None
    error: ChatClientError | None = None
    sent_on: int = -1  # the generation of the connection it was last written to
    change: Ack | None = None  # a change's own `edited`/`deleted`, seen: its duplicate ack

    def settle(self, answer: Event | None = None, error: ChatClientError | None = None) -> None:
        if not self.done.is_set():
            self.answer, self.error = answer, error
            self.done.set()


class RequestQueue:
    def __init__(self) -> None:
        self._waiting: dict[str, PendingRequest] = {}
        self._refs = itertools.count(1)
        self.ready: WebSocketConnection | None = None  # the connection requests go out on
        self.generation = 0  # counts connections, so each knows what it has carried

    def new_ref(self, prefix: str = "r") -> str:
        return f"{prefix}{next(self._refs)}"

    async def call(
        self, build: Callable[[str], Request], expect: type[_E], client_id: str | None = None
    ) -> _E:
        """Make the request `build(ref)`, wait for its answer; `RequestError` if refused."""
        ref = self.new_ref()
        pending = PendingRequest(ref, encode_request(build(ref)), client_id)
        self._waiting[ref] = pending
        try:
            await self._transmit(pending)
            await pending.done.wait()
        finally:
            del self._waiting[ref]
        if pending.error is not None:
            raise pending.error
        if not isinstance(pending.answer, expect):
            raise ChatClientError(f"expected {expect.__name__}, got {pending.answer!r}")
        return pending.answer

    async def _transmit(self, pending: PendingRequest) -> None:
        ws = self.ready
        if ws is None:
            return  # written when the next connection is ready
        pending.sent_on = self.generation
        # On a close, the reader sees it; the request is written again after the reconnect.
        with suppress(ConnectionClosed):
            await ws.send_message(pending.frame)

    async def resend(self, ws: WebSocketConnection) -> None:
        """Write what `ws` has not carried yet, oldest first (requests made meanwhile join the
        end of the line); then `ws` is ready."""
        generation = self.generation
        while todo := [p for p in self._waiting.values() if p.sent_on != generation]:
            for pending in todo:
                if pending.done.is_set() or pending.ref not in self._waiting:
                    continue
                pending.sent_on = generation
                try:
                    await ws.send_message(pending.frame)
                except ConnectionClosed:
                    return
        self.ready = ws

    def disconnected(self) -> None:
        self.ready = None
        self.generation += 1

    def get(self, ref: str | None, client_id: str | None = None) -> PendingRequest | None:
        """The request answered by an event with this `ref` (or, for an ack, `client_id`)."""
        pending = self._waiting.get(ref or "")
        if pending is None and client_id is not None:
            waiting = self._waiting.values()
            pending = next((p for p in waiting if p.client_id == client_id), None)
        return pending

    def fail_all(self, error: ChatClientError) -> None:
        for pending in self._waiting.values():
            pending.settle(error=error)

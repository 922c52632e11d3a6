"""`PATCH` and `DELETE /api/rooms/{room}/messages/{id}`: an edit or delete over HTTP.

The same rules and the same path as the WebSocket `edit` and `delete` (docs/http.md): the text is
validated by `protocol.decode` itself, the target by `server.chat.change_rules.check_change`,
and the change is queued on the message writer like a send, so it takes its seq in order with
the room's messages, is durable before it is delivered, and is deduplicated by `client_id`. The
handler waits for the writer's ack (or refusal) and answers with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import trio
from quart import Response, request

import protocol
from protocol import Ack, Delete, Edit, Error, ErrorCode, Event, ProtocolError
from protocol.frame_fields import ClientId
from server.chat.change_rules import check_change
from server.chat.room_rules import STAFF
from server.http._json import HttpError, decode_body, json_response
from server.persist.writer import PendingSend
from storage import KIND_DELETE, KIND_EDIT, NewMessage, Store, User

Submit = Callable[[PendingSend], Awaitable[None]]
# The status of each refusal: the others (a bad field, text rules) are 422.
_STATUS = {
    ErrorCode.NO_SUCH_MESSAGE: 404,
    ErrorCode.NOT_AUTHOR: 403,
    ErrorCode.MESSAGE_DELETED: 409,
    ErrorCode.UNAVAILABLE: 503,
}


class EditBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    text: str
    client_id: ClientId | None = None


class DeleteBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    client_id: ClientId | None = None


class _Reply:
    """The writer's `AckTarget` for one HTTP request: holds the ack or the refusal."""

    signed_out = False  # the bearer token was checked when the request came in

    def __init__(self) -> None:
        self.event: Event | None = None
        self.answered = trio.Event()

    def send_event(self, event: Event) -> None:
        self.event = event
        self.answered.set()


async def change_message(
    store: Store,
    submit: Submit,
    user: User,
    change: Edit | Delete,
    max_text: int,
) -> Ack:
    """Check, queue and await one edit or delete: its ack, or `HttpError` with the refusal's
    code."""
    try:
        protocol.decode(msgspec.json.encode(change), max_text=max_text)  # the frame's rules
        target = await store.message(change.room, change.id)
        kind = KIND_EDIT if type(change) is Edit else KIND_DELETE
        staff = False
        if target is not None and target.user != user.name and kind == KIND_DELETE:
            staff = await store.role_of(change.room, user.id) in STAFF
        check_change(target, user.name, kind, change.id, None, staff)
    except ProtocolError as exc:
        raise HttpError(_STATUS.get(exc.code, 422), exc.code, exc.message) from None
    text = change.text if type(change) is Edit else ""
    entry = NewMessage(change.room, user.id, user.name, text, change.client_id, kind, change.id)
    reply = _Reply()
    with trio.CancelScope(shield=True):  # queued: its answer is awaited even if the client left
        await submit(PendingSend(entry, reply, None, trio.current_time()))
        await reply.answered.wait()
    event = reply.event
    if isinstance(event, Error):
        code = ErrorCode(event.code)
        raise HttpError(_STATUS.get(code, 503), code, event.message)
    assert isinstance(event, Ack)
    return event


def ack_json(ack: Ack) -> dict[str, object]:
    return {
        "room": ack.room,
        "id": ack.id,
        "seq": ack.seq,
        "client_id": ack.client_id,
        "duplicate": ack.duplicate,
    }


async def change_response(
    store: Store, submit: Submit, user: User, target: tuple[str, int], body: bytes, max_text: int
) -> Response:
    """The answer to `PATCH` (an edit: `EditBody`) or `DELETE` (an optional `DeleteBody`) of
    `target` (room, message id) by `user`, a member of the room."""
    room, message_id = target
    change: Edit | Delete
    if request.method == "PATCH":
        edit = decode_body(body, EditBody)
        change = Edit(room=room, id=message_id, text=edit.text, client_id=edit.client_id)
    else:
        client_id = decode_body(body, DeleteBody).client_id if body.strip() else None
        change = Delete(room=room, id=message_id, client_id=client_id)
    ack = await change_message(store, submit, user, change, max_text)
    return json_response(ack_json(ack))

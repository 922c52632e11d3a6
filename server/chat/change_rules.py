"""Who may edit or delete a message (issue #15), one rule for the WebSocket and HTTP alike."""

from __future__ import annotations

from protocol import ErrorCode, Message, ProtocolError
from storage import KIND_DELETE, KIND_EDIT


def check_change(
    target: Message | None,
    user: str,
    kind: int,
    message_id: int,
    ref: str | None,
    staff: bool = False,
) -> None:
    """Refuse an edit or delete (`kind`) of `target` by `user`, or return, for WebSocket and
    HTTP alike. Only the author may edit; the author, or the room's owner or an admin
    (`staff`), may delete."""
    if target is None:
        raise ProtocolError(ErrorCode.NO_SUCH_MESSAGE, f"no message {message_id} here", ref)
    if target.user != user and not (staff and kind == KIND_DELETE):
        what = "edit" if kind == KIND_EDIT else "delete"
        raise ProtocolError(ErrorCode.NOT_AUTHOR, f"only its author may {what} a message", ref)
    if target.deleted:
        raise ProtocolError(ErrorCode.MESSAGE_DELETED, f"message {message_id} was deleted", ref)

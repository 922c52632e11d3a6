"""What HTTP API requests carry, parsed and checked: JSON bodies and query parameters.

Bodies are msgspec structs decoded by `server.http._json.decode_body`; query parameters are read
from quart's `request`. Every refusal is an `HttpError` (docs/http.md).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from quart import request

import protocol
from protocol import MAX_HISTORY_LIMIT, ROOM_PATTERN, ErrorCode
from protocol.frame_fields import MAX_SEQ, ClientId, RoomName
from protocol.room_frames import SlowMode, Topic, UserName
from server.http._json import HttpError

DEFAULT_HISTORY_LIMIT = 50
USER_PATTERN = r"^[A-Za-z0-9_.-]{1,32}\Z"  # \Z: `$` would accept a trailing newline
_HISTORY_PARAMS = frozenset({"before_seq", "limit"})
_ROOM = re.compile(ROOM_PATTERN)


# Request bodies: unknown fields are refused so a typo fails loudly. ---------------------------


class _Body(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


Password = Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
# A session's label; without one the User-Agent is used. Cleaned and cut to 100 by the store.
Device = Annotated[str, msgspec.Meta(max_length=256)]


class Registration(_Body, frozen=True):
    name: Annotated[str, msgspec.Meta(pattern=USER_PATTERN)]
    password: Password
    device: Device | None = None


class Login(_Body, frozen=True):
    # Not the registration rules: a name that could never exist is just a failed login.
    name: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=256)]
    device: Device | None = None


class DisplayNameChange(_Body, frozen=True):
    # Checked by storage.accounts.check_display_name (400); the bound only caps the work.
    display_name: Annotated[str, msgspec.Meta(max_length=1024)] | None


class PasswordChange(_Body, frozen=True):
    old: Annotated[str, msgspec.Meta(max_length=256)]
    new: Password


class NewRoom(_Body, frozen=True):
    name: RoomName
    private: bool = False
    topic: Topic = ""


class RoomSettings(_Body, frozen=True):
    topic: Topic | None = None
    slow_mode: SlowMode | None = None


class MemberTarget(_Body, frozen=True):
    user: UserName


class RoleChange(_Body, frozen=True):
    role: Annotated[str, msgspec.Meta(max_length=16)]


class ReadCursor(_Body, frozen=True):
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]


class BatchItem(_Body, frozen=True):
    text: str
    client_id: ClientId | None = None


class BatchImport(_Body, frozen=True):
    messages: Annotated[list[BatchItem], msgspec.Meta(min_length=1)]


async def request_body() -> bytes:
    """The whole body; werkzeug's 413 (as JSON) if it is over MAX_CONTENT_LENGTH."""
    return await request.get_data(cache=False, as_text=False, parse_form_data=False)


def checked_batch_text(index: int, item: BatchItem, max_text: int) -> str:
    """`item`'s text, checked by the rules `protocol.decode` applies to a `send` frame; else
    `HttpError` 422 naming `messages[index]`."""
    if not item.text.strip():
        raise HttpError(422, ErrorCode.TEXT_EMPTY, f"messages[{index}]: text is empty")
    if len(item.text) > max_text:
        raise HttpError(
            422,
            ErrorCode.TEXT_TOO_LONG,
            f"messages[{index}]: text is over {max_text} characters",
        )
    refused = protocol.refused_character(item.text)
    if refused is not None:
        raise HttpError(422, ErrorCode.TEXT_INVALID, f"messages[{index}]: text contains {refused}")
    if item.client_id is not None and (refused := protocol.refused_character(item.client_id)):
        message = f"messages[{index}]: client_id contains {refused}"
        raise HttpError(422, ErrorCode.BAD_FIELD, message)
    return item.text


def history_params() -> tuple[int | None, int]:
    unknown = set(request.args) - _HISTORY_PARAMS
    if unknown:
        name = sorted(unknown)[0]
        raise HttpError(422, ErrorCode.UNKNOWN_FIELD, f"unknown query parameter `{name}`")
    before_seq = int_param("before_seq", 1, MAX_SEQ)
    limit = int_param("limit", 1, MAX_HISTORY_LIMIT)
    return before_seq, DEFAULT_HISTORY_LIMIT if limit is None else limit


def revoke_all_param() -> bool:
    """`DELETE /api/sessions`'s `?all=true|false` (default false)."""
    unknown = set(request.args) - {"all"}
    if unknown:
        name = sorted(unknown)[0]
        raise HttpError(422, ErrorCode.UNKNOWN_FIELD, f"unknown query parameter `{name}`")
    raw = request.args.get("all", "false")
    if raw not in ("true", "false"):
        raise HttpError(422, ErrorCode.BAD_FIELD, "`all` must be true or false")
    return raw == "true"


def device_of(device: str | None) -> str:
    """A new session's device label: the body's `device`, else the User-Agent (else empty)."""
    if device is not None:
        return device
    return request.headers.get("User-Agent", "")[:256]


def int_param(name: str, low: int, high: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    # ASCII digits only, and few enough that int() is cheap and the value fits a 64-bit integer.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise HttpError(422, ErrorCode.BAD_FIELD, f"`{name}` must be an integer >= {low}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise HttpError(422, ErrorCode.BAD_FIELD, f"`{name}` must be an integer {bounds}")
    return value


def check_room_name(room: str) -> None:
    if _ROOM.match(room) is None:
        raise no_such_room(room)  # a name that cannot exist names no room


def no_such_room(room: str) -> HttpError:
    return HttpError(404, ErrorCode.NO_SUCH_ROOM, f"no room named {room!r}")

"""What HTTP API requests carry, parsed and checked: JSON bodies and query parameters.

Bodies are msgspec structs decoded by `server.http._json.decode_body`; query parameters are read
from quart's `request`. Every refusal is an `HttpError` (docs/http.md).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from quart import request

from protocol import MAX_HISTORY_LIMIT, ErrorCode
from protocol.messages import MAX_SEQ, ClientId, RoomName
from server.http._json import HttpError

DEFAULT_HISTORY_LIMIT = 50
USER_PATTERN = r"^[A-Za-z0-9_.-]{1,32}\Z"  # \Z: `$` would accept a trailing newline
_HISTORY_PARAMS = frozenset({"before_seq", "limit"})


# Request bodies: unknown fields are refused so a typo fails loudly. ---------------------------


class _Body(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Registration(_Body, frozen=True):
    name: Annotated[str, msgspec.Meta(pattern=USER_PATTERN)]
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=256)]


class Login(_Body, frozen=True):
    # Not the registration rules: a name that could never exist is just a failed login.
    name: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=256)]


class NewRoom(_Body, frozen=True):
    name: RoomName


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


def history_params() -> tuple[int | None, int]:
    unknown = set(request.args) - _HISTORY_PARAMS
    if unknown:
        name = sorted(unknown)[0]
        raise HttpError(422, ErrorCode.UNKNOWN_FIELD, f"unknown query parameter `{name}`")
    before_seq = _int_param("before_seq", 1, MAX_SEQ)
    limit = _int_param("limit", 1, MAX_HISTORY_LIMIT)
    return before_seq, DEFAULT_HISTORY_LIMIT if limit is None else limit


def _int_param(name: str, low: int, high: int | None) -> int | None:
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

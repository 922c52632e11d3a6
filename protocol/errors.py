"""Error and close codes: the one table clients code against (see docs/protocol.md)."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Stable codes carried by `error` frames and HTTP JSON errors.

    Codes are part of protocol v1: they may be added to, never renamed.
    """

    # The frame itself is unusable.
    BAD_ENCODING = "bad_encoding"  # bytes are not UTF-8
    BAD_JSON = "bad_json"  # not a JSON document
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
    UNKNOWN_TYPE = "unknown_type"  # `type` missing or not a known request
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    BAD_FIELD = "bad_field"  # a field has the wrong type or an invalid value
    TEXT_EMPTY = "text_empty"
    TEXT_TOO_LONG = "text_too_long"
    TEXT_INVALID = "text_invalid"  # a character that is not stored (a control character, ...)
    # The request is well formed but not allowed now.
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    BAD_TOKEN = "bad_token"
    NO_SUCH_ROOM = "no_such_room"
    NOT_MEMBER = "not_member"
    RATE_LIMITED = "rate_limited"
    NO_SUCH_MESSAGE = "no_such_message"  # edit/delete: no message with that id in the room
    NOT_AUTHOR = "not_author"  # edit/delete of someone else's message
    MESSAGE_DELETED = "message_deleted"  # edit/delete of a message already deleted
    QUERY_EMPTY = "query_empty"  # search: the query holds no word (letters or digits)
    QUERY_TOO_LONG = "query_too_long"  # search: over 200 characters
    # Rooms with roles (issue #15).
    FORBIDDEN = "forbidden"  # the caller's role in the room is too low for the request
    BANNED = "banned"  # join or invite of a user banned from the room
    NO_SUCH_USER = "no_such_user"  # the named user does not exist
    USER_NOT_MEMBER = "user_not_member"  # the named user is not a member (kick, transfer, ...)
    OWNER_MUST_TRANSFER = "owner_must_transfer"  # the owner leaves only after a transfer
    SLOW_MODE = "slow_mode"  # a send within the room's slow mode: see `retry_after`
    BAD_ROLE = "bad_role"  # set_role to anything but "admin" or "member"
    # HTTP-only codes.
    BAD_CREDENTIALS = "bad_credentials"
    NAME_TAKEN = "name_taken"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"  # a request was not received in time (408); the connection is closed
    TOO_MANY_ATTEMPTS = "too_many_attempts"  # login or register throttled: see Retry-After
    # Our fault, not the peer's.
    UNAVAILABLE = "unavailable"  # shutting down or overloaded; retry elsewhere/later
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server sends (RFC 6455 range plus 4000-4999 private use)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutdown or restart: reconnect with resume
    PROTOCOL_ERROR = 1002  # WebSocket framing violation
    INVALID_DATA = 1007  # text frame that is not UTF-8
    POLICY = 1008  # repeated protocol errors
    TOO_BIG = 1009  # frame over the size limit
    INTERNAL = 1011  # unexpected server error (no details are given)
    UNAUTHENTICATED = 4001  # bad token in hello, hello not sent in time, token revoked or expired
    STALE = 4003  # did not answer heartbeat pings in time
    SLOW_CONSUMER = 4008  # outbound backlog over its bound: reconnect with resume


class ChatError(Exception):
    """Root of hibiki's own exceptions."""


class ProtocolError(ChatError):
    """The peer sent something the protocol does not allow (the remote side's fault)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        ref: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after  # seconds, for `slow_mode`

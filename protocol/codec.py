"""Bytes to typed requests and typed events to bytes; pure functions, no I/O."""

from __future__ import annotations

import re

import msgspec

from ._characters import refused_character
from .errors import ErrorCode, ProtocolError
from .messages import Edit, Event, Request, Send

DEFAULT_MAX_TEXT = 4000

_request_decoder = msgspec.json.Decoder(Request)
_event_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()
_FIELD = re.compile(r"`([^`]*)`")


def encode(event: Event) -> bytes:
    """Encode a server event to the JSON bytes sent on the wire (once per event, for every peer)."""
    return _encoder.encode(event)


def decode(data: bytes | str, *, max_text: int = DEFAULT_MAX_TEXT) -> Request:
    """Decode and validate one client frame.

    Raises only `ProtocolError`, whose `code` says what was wrong; never anything else.
    """
    try:
        request: Request = _request_decoder.decode(data)
    except msgspec.ValidationError as exc:
        error = _encoding_error(data) or _validation_error(str(exc))
        error.ref = _salvage_ref(data)
        raise error from None
    except msgspec.DecodeError:
        bad_json = ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON")
        raise (_encoding_error(data) or bad_json) from None
    except UnicodeError:  # bad UTF-8 inside a string, or a str holding lone surrogates
        raise ProtocolError(ErrorCode.BAD_ENCODING, "frame is not valid UTF-8") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_JSON, "frame is nested too deeply") from None
    if type(request) is Send or type(request) is Edit:
        if len(request.text) > max_text:
            raise ProtocolError(
                ErrorCode.TEXT_TOO_LONG, f"text is over {max_text} characters", request.ref
            )
        # Before the empty check: str.strip() also strips refused controls (U+000B, U+001C-1F,
        # U+0085), and a text holding one is invalid, not empty.
        _check_storable(request)
        if not request.text.strip():
            raise ProtocolError(ErrorCode.TEXT_EMPTY, "text is empty", request.ref)
    return request


def _check_storable(request: Send | Edit) -> None:
    # Only what is stored: `ref` is echoed, `token` only looked up, room names are pattern-bound.
    refused = refused_character(request.text)
    if refused is not None:
        raise ProtocolError(ErrorCode.TEXT_INVALID, f"text contains {refused}", request.ref)
    if request.client_id is not None:
        refused = refused_character(request.client_id)
        if refused is not None:
            message = f"client_id contains {refused} - at `$.client_id`"
            raise ProtocolError(ErrorCode.BAD_FIELD, message, request.ref)


def decode_event(data: bytes | str) -> Event:
    """Decode a server event (for clients and tests); raises `ProtocolError` on bad input."""
    try:
        event: Event = _event_decoder.decode(data)
        return event
    except msgspec.ValidationError as exc:  # a DecodeError subclass: must come first
        raise _validation_error(str(exc)) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "event is not valid JSON") from None


def _validation_error(detail: str) -> ProtocolError:
    # msgspec's messages are stable; map them to our codes so clients never parse prose.
    if "missing required field `type`" in detail or detail.endswith("at `$.type`"):
        return ProtocolError(ErrorCode.UNKNOWN_TYPE, "`type` is missing or not a known request")
    if "missing required field" in detail:
        return ProtocolError(ErrorCode.MISSING_FIELD, _field_message("missing field", detail))
    if "unknown field" in detail:
        return ProtocolError(ErrorCode.UNKNOWN_FIELD, _field_message("unknown field", detail))
    if detail.startswith("Expected `object`") and "- at" not in detail:
        return ProtocolError(ErrorCode.NOT_AN_OBJECT, "frame must be a JSON object")
    return ProtocolError(ErrorCode.BAD_FIELD, detail)


def _field_message(prefix: str, detail: str) -> str:
    match = _FIELD.search(detail)
    return f"{prefix} `{match.group(1)}`" if match else prefix


def _salvage_ref(data: bytes | str) -> str | None:
    """Recover `ref` from an invalid but well-formed frame so the client can match the error."""
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    ref = obj.get("ref") if isinstance(obj, dict) else None
    return ref if isinstance(ref, str) and len(ref) <= 64 else None


def _encoding_error(data: bytes | str) -> ProtocolError | None:
    # msgspec checks UTF-8 only where it decodes a string value: a bad byte elsewhere (a key, the
    # `type` tag, between tokens) surfaces as some other error. Checked on the error path only.
    if isinstance(data, bytes):
        try:
            data.decode()
        except UnicodeDecodeError:
            return ProtocolError(ErrorCode.BAD_ENCODING, "frame is not valid UTF-8")
    return None

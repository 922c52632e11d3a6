"""JSON in and out for the HTTP API: typed bodies, one error shape, one place mapping errors.

Every error response is `{"error": {"code": <ErrorCode>, "message": "..."}}`; the code is the stable
part clients branch on, the message is for humans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from quart import Response, current_app
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Response as WerkzeugResponse

from protocol import ErrorCode, ProtocolError

S = TypeVar("S", bound=msgspec.Struct)

JSON = "application/json"
_encoder = msgspec.json.Encoder()


class HttpError(ProtocolError):
    """A request the API refuses (the client's fault), with its HTTP status."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.headers = dict(headers or {})


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """`payload` encoded by msgspec: nested protocol events encode exactly as on the WebSocket."""
    response_class: type[Response] = current_app.response_class
    return response_class(
        _encoder.encode(payload), status=status, headers=dict(headers or {}), mimetype=JSON
    )


def empty_response(status: int = 204) -> Response:
    response_class: type[Response] = current_app.response_class
    response = response_class(b"", status=status)
    del response.headers["Content-Type"]  # no body, so no type to declare
    return response


def error_response(error: HttpError) -> Response:
    body = {"error": {"code": str(error.code), "message": error.message}}
    return json_response(body, error.status, error.headers)


def decode_body(data: bytes, type_: type[S]) -> S:
    """Decode a request body into `type_` (a Struct that forbids unknown fields).

    Raises only `HttpError` (422): `bad_json`, `bad_encoding`, `not_an_object`, `missing_field`,
    `unknown_field` or `bad_field`; the message names the offending path, e.g. `$.messages[3]`.
    """
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:  # a DecodeError subclass: must come first
        raise (_encoding_error(data) or _validation_error(str(exc))) from None
    except msgspec.DecodeError:
        bad_json = HttpError(422, ErrorCode.BAD_JSON, "body is not valid JSON")
        raise (_encoding_error(data) or bad_json) from None
    except UnicodeError:
        raise HttpError(422, ErrorCode.BAD_ENCODING, "body is not valid UTF-8") from None
    except RecursionError:
        raise HttpError(422, ErrorCode.BAD_JSON, "body is nested too deeply") from None


def _encoding_error(data: bytes) -> HttpError | None:
    # msgspec checks UTF-8 only inside string values; a bad byte elsewhere surfaces as another
    # error (as in protocol/codec.py). Checked on the error path only.
    try:
        data.decode()
    except UnicodeDecodeError:
        return HttpError(422, ErrorCode.BAD_ENCODING, "body is not valid UTF-8")
    return None


def _validation_error(detail: str) -> HttpError:
    # msgspec's messages are stable (protocol/codec.py relies on them too): map them to codes so
    # clients never parse prose, and keep the detail, which says where the problem is.
    if detail.startswith("Expected `object`") and " - at " not in detail:
        return HttpError(422, ErrorCode.NOT_AN_OBJECT, "body must be a JSON object")
    if detail.startswith("Object missing required field"):
        return HttpError(422, ErrorCode.MISSING_FIELD, detail)
    if detail.startswith("Object contains unknown field"):
        return HttpError(422, ErrorCode.UNKNOWN_FIELD, detail)
    return HttpError(422, ErrorCode.BAD_FIELD, detail)


# Statuses werkzeug raises on its own (routing, body limits, timeouts, our 500) -> our codes.
_STATUS_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    408: ErrorCode.TIMEOUT,
    413: ErrorCode.TOO_LARGE,
    503: ErrorCode.UNAVAILABLE,
}
_MESSAGES = {
    404: "no such route",
    413: "request body is too large",
    408: "request body was not received in time",
    500: "internal error",
}


def http_exception_response(exc: HTTPException) -> Response | WerkzeugResponse:
    """werkzeug's HTML error pages as our JSON errors; redirects (< 400) pass through."""
    status = exc.code or 500
    if status < 400:
        return exc.get_response()  # a redirect, e.g. merging `//` in a path
    headers: dict[str, str] = {}
    message = _MESSAGES.get(status, exc.name.lower())
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        allowed = ", ".join(sorted(exc.valid_methods))
        headers["Allow"] = allowed
        message = f"method not allowed here (allowed: {allowed})"
    code = _STATUS_CODES.get(status)
    if code is None:
        code = ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_FIELD
    return error_response(HttpError(status, code, message, headers))

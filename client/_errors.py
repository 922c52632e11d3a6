"""The client library's exceptions: whose fault, and what the server said."""

from __future__ import annotations

from protocol import ChatError


class ChatClientError(ChatError):
    """Root of the client library's exceptions."""


class ApiError(ChatClientError):
    """The HTTP API refused a call; `code` is the stable error code of docs/http.md."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class LoginError(ApiError):
    """Register or login was refused (`bad_credentials`, `name_taken`, `bad_field`, ...)."""


class RequestError(ChatClientError):
    """The server answered a request with an `error` event (`not_member`, `rate_limited`, ...).

    Nothing happened on the server. A `send` refused with `rate_limited` or `unavailable` may be
    retried later with the same `client_id` (it is kept on the exception).
    """

    def __init__(self, code: str, message: str, *, client_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.client_id = client_id


class AuthenticationError(ChatClientError):
    """The server refused the token (close 4001) and logging in again was impossible or failed."""


class ClientClosed(ChatClientError):
    """The client was closed (or stopped after an error) before the request was answered."""

"""The HTTP half of the client: accounts and rooms (docs/http.md), over httpx."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from ._errors import ApiError, LoginError

_T = TypeVar("_T")


class RoomInfo(msgspec.Struct, frozen=True):
    """A room as `GET /api/rooms` lists it: its latest `seq` and whether the caller is a member."""

    name: str
    last_seq: int
    member: bool


class UserInfo(msgspec.Struct, frozen=True):
    id: int
    name: str


class LoginSession(msgspec.Struct, frozen=True):
    """The answer to register and login: the user, a bearer token and its expiry (ms epoch)."""

    user: UserInfo
    token: str
    expires_at: int


class _RoomList(msgspec.Struct, frozen=True):
    rooms: list[RoomInfo]


class _ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str


class _ErrorBody(msgspec.Struct, frozen=True):
    error: _ErrorDetail


def endpoints(server: str) -> tuple[str, str]:
    """`(http_base, websocket_url)` for a server given as `http://HOST:PORT` (or `HOST:PORT`)."""
    if "://" not in server:
        server = "http://" + server
    parts = urlsplit(server)
    if parts.scheme != "http" or not parts.netloc:
        raise ValueError(f"the server must be an http://HOST:PORT URL, not {server!r}")
    base = urlunsplit(("http", parts.netloc, parts.path.rstrip("/"), "", ""))
    ws = urlunsplit(("ws", parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))
    return base, ws


class HttpApi:
    """The calls of docs/http.md the client needs; errors raise `ApiError` with the stable code."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def login(self, name: str, password: str, *, register: bool = False) -> LoginSession:
        path = "/api/register" if register else "/api/login"
        response = await self._http.post(path, json={"name": name, "password": password})
        return _decode(response, LoginSession, LoginError)

    async def rooms(self, token: str) -> list[RoomInfo]:
        response = await self._http.get("/api/rooms", headers=_bearer(token))
        return _decode(response, _RoomList).rooms

    async def create_room(self, token: str, name: str) -> RoomInfo:
        response = await self._http.post("/api/rooms", json={"name": name}, headers=_bearer(token))
        return _decode(response, RoomInfo)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _decode(response: httpx.Response, into: type[_T], error: type[ApiError] = ApiError) -> _T:
    if response.is_success:
        return msgspec.json.decode(response.content, type=into)
    try:
        detail = msgspec.json.decode(response.content, type=_ErrorBody).error
    except msgspec.DecodeError:  # not our JSON error body (a proxy's error page, say)
        detail = _ErrorDetail("internal", response.reason_phrase or "HTTP error")
    raise error(response.status_code, detail.code, detail.message)

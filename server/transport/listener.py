"""The one public port: accepts TCP, reads the request head, and routes it — `GET /ws` with an
Upgrade to the fast WebSocket path, everything else to hypercorn.

Each accepted connection is first admitted by the per-address caps (`AddressLimits`): over one,
it is answered 503 before anything is read from it, and closed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import h11
import trio

from server.ops.log_throttle import LogThrottle
from server.ops.metrics import Metrics, RefusalReason
from server.transport.address_limits import AddressLimits, AddressSlot

_log = logging.getLogger(__name__)
MAX_HEAD = 16 * 1024
ACCEPT_BACKOFF = 0.1  # after a failed accept (EMFILE and friends): back off rather than spin
REFUSAL_GRACE = 1.0  # a refused peer has this long to close after our 503 (else we close)
WS_PATH = b"/ws"
# One shared name for the handler tasks (trio would format a new string for each one).
_HANDLER_NAME = "server.transport.listener.Listener._handle"
_REFUSAL_BODY: dict[RefusalReason, bytes] = {
    "per_address": b"too many connections from this address",
    "pending_per_address": b"too many pending connections from this address",
}

# (sock, peer, head, request, leave_pending): `leave_pending()` once past `hello`.
WsHandler = Callable[[socket.socket, str, bytes, h11.Request, Callable[[], None]], Awaitable[None]]
HttpHandler = Callable[[socket.socket, bytes], Awaitable[None]]


class Listener:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        handshake_timeout: float,
        on_websocket: WsHandler,
        on_http: HttpHandler,
        backlog: int = 4096,
        limits: AddressLimits | None = None,
        metrics: Metrics | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._host = host
        self._reuse_port = reuse_port  # share the port with sibling workers (`--workers`)
        self._port = port
        self._timeout = handshake_timeout
        self._on_websocket = on_websocket
        self._on_http = on_http
        self._backlog = backlog
        self._limits = AddressLimits(0, 0) if limits is None else limits
        self._metrics = Metrics() if metrics is None else metrics
        self._accept_errors = LogThrottle(_log, "accept failed", clock=trio.current_time)
        self._accepting = trio.CancelScope()
        self.handlers: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept until `stop_accepting`; then wait for the connection handlers to finish."""
        infos = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        lsock = socket.socket(family, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self._reuse_port:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        lsock.bind(address)
        lsock.listen(self._backlog)
        lsock.setblocking(False)
        try:
            async with trio.open_nursery() as handlers:
                self.handlers = handlers
                task_status.started(lsock.getsockname()[1])
                with self._accepting:
                    await self._accept_loop(lsock, handlers)
                trio.lowlevel.notify_closing(lsock)
                lsock.close()
        finally:
            if lsock.fileno() != -1:
                trio.lowlevel.notify_closing(lsock)
                lsock.close()

    def stop_accepting(self) -> None:
        self._accepting.cancel()

    async def _accept_loop(self, lsock: socket.socket, handlers: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(lsock)
            while True:
                try:
                    sock, addr = lsock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    self._metrics.accept_errors += 1
                    condition = errno.errorcode.get(exc.errno or 0, "other")
                    self._accept_errors.occurred(condition, "accept failed: %s", exc)
                    await trio.sleep(ACCEPT_BACKOFF)
                    break
                self._accept_errors.recovered()
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # Admitted here, in accept order (handler tasks may start in any order).
                slot = self._limits.admit(addr[0])
                if isinstance(slot, AddressSlot):
                    peer = f"{addr[0]}:{addr[1]}"
                    handlers.start_soon(self._handle, sock, peer, slot, name=_HANDLER_NAME)
                else:
                    self._metrics.connections_refused[slot] += 1
                    handlers.start_soon(_refuse, sock, _REFUSAL_BODY[slot])

    async def _handle(self, sock: socket.socket, peer: str, slot: AddressSlot) -> None:
        try:
            head = await self._read_head(sock)
            if head is None:
                return
            request = _parse_head(head)
            if request is None:
                reject(sock, 400, b"bad request")
                return
            if _is_websocket(request):
                serving = self._on_websocket(sock, peer, head, request, slot)  # slot(): past hello
                # The handler holds the head and request only until it has answered them: this
                # frame must not keep them (~1.5 KB) for the connection's whole life.
                del head, request
                await serving
            else:
                slot.leave_pending()  # hypercorn's own timeouts govern it from here
                await self._on_http(sock, head)
        finally:
            slot.release()
            # Also after hypercorn: a cancelled handler can leave its stream unclosed.
            if sock.fileno() != -1:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def _read_head(self, sock: socket.socket) -> bytes | None:
        """The bytes read up to the end of the request head (maybe more behind it), or None
        after answering 431 for a head over `MAX_HEAD`, or if the peer left or timed out."""
        buf = b""
        with trio.move_on_after(self._timeout):
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    return None
                if not data:
                    return None
                # Checked after every read: one read can bring a whole oversized head.
                buf += data
                end = buf.find(b"\r\n\r\n", max(0, len(buf) - len(data) - 3))
                head_size = len(buf) if end == -1 else end + 4
                if head_size > MAX_HEAD:
                    reject(sock, 431, b"request head too large")
                    return None
                if end != -1:
                    return buf
        return None


def _parse_head(head: bytes) -> h11.Request | None:
    conn = h11.Connection(h11.SERVER)
    try:
        conn.receive_data(head)
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


def _is_websocket(request: h11.Request) -> bool:
    if request.method != b"GET" or request.target.split(b"?", 1)[0] != WS_PATH:
        return False
    return any(
        name == b"upgrade" and b"websocket" in value.lower() for name, value in request.headers
    )


async def _refuse(sock: socket.socket, body: bytes) -> None:
    """503 before reading the request, then half-close and drain what the peer still sends
    until it closes (or `REFUSAL_GRACE`), so that closing does not reset away the answer."""
    try:
        reject(sock, 503, body)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        with trio.move_on_after(REFUSAL_GRACE):
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    if not sock.recv(65536):
                        return
                except BlockingIOError:
                    continue
                except OSError:
                    return
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


def reject(sock: socket.socket, status: int, body: bytes) -> None:
    """Answer a request head with a plain HTTP error (e.g. 403 for a disallowed Origin)."""
    reason = {
        400: b"Bad Request",
        403: b"Forbidden",
        431: b"Request Header Fields Too Large",
        503: b"Service Unavailable",
    }
    response = (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason.get(status, b"Error"), len(body), body)
    )
    with contextlib.suppress(OSError):
        sock.send(response)

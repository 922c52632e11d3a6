"""Serve one upgraded WebSocket: whole text frames take the inbound fast path, wsproto parses the
rest (server/transport/inbound.py); replies go through the flusher."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import h11
import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import RemoteProtocolError

from protocol import CloseCode, ProtocolError, decode
from server.chat.connection import ChatConnection, ConnState
from server.chat.registry import ConnectionRegistry
from server.chat.session import ChatServices, ChatSession
from server.config import Config
from server.ops.metrics import close_label
from server.shutdown import Drain
from server.transport.connection import WsConnection
from server.transport.flusher import Flusher, shutdown_write
from server.transport.frames import pong_frame
from server.transport.handshake import HandshakeError, accept_response
from server.transport.inbound import InboundConnection
from server.transport.listener import reject

_log = logging.getLogger(__name__)
RECV_SIZE = 65536


async def serve_websocket(
    sock: socket.socket,
    peer: str,
    head: bytes,
    request: h11.Request,
    services: ChatServices,
    flusher: Flusher,
    registry: ConnectionRegistry,
    drain: Drain,
    on_open: Callable[[], None] | None = None,
) -> None:
    """Answer the upgrade `request` (whose bytes, and maybe more, are `head`) and run the session
    to its end; `on_open` is called when its `hello` is accepted."""
    config = services.config
    try:
        response = accept_response(request)
    except HandshakeError as exc:
        reject(sock, exc.status, exc.reason.encode())
        return
    # Frames a client sent right behind its request (it should wait for the 101, but may not).
    trailing = head.split(b"\r\n\r\n", 1)[1]
    ws = InboundConnection(config.limits.max_frame, trailing_data=trailing)
    link = WsConnection(sock, peer, flusher, config.limits.outbound_limit)
    conn = ChatConnection(link.out, stop_reading=link.stop_reading, on_open=on_open)
    conn.enqueue(response)
    # Idle connections are most of them: nothing of the handshake stays referenced from here.
    del head, request, response, trailing
    session = ChatSession(conn, services)
    registry.add(conn)
    _log_opened(peer)
    try:
        with drain.reading(link.reader_scope):
            await _read_frames(conn, link, ws, session, config)
        if conn.state is ConnState.HELLO or conn.state is ConnState.OPEN:
            # Reading was stopped for shutdown: let the writer's last acks out, then say goodbye.
            await drain.writer_flushed()
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
    except Exception:
        _log.exception("connection failed", extra={"peer": peer})
        conn.close(CloseCode.INTERNAL, "")
    finally:
        session.closed()
        registry.remove(conn)
        try:
            with trio.CancelScope(shield=True):
                await _finish(conn, link, config.timeouts.close_timeout)
        finally:
            registry.closed(conn)
    _log.info(
        "connection closed",
        extra={
            "peer": peer,
            "user": conn.user_name or None,
            "code": conn.close_code,
            "reason": conn.close_reason,
            "cause": close_label(conn.close_code, drain.draining, by_peer=conn.closed_by_peer),
            "duration_s": round(trio.current_time() - conn.created_at, 3),
        },
    )


async def _read_frames(
    conn: ChatConnection, link: WsConnection, ws: Connection, session: ChatSession, config: Config
) -> None:
    message = _Message()
    sock = link.sock
    pending_events = True  # the handshake bytes may already carry frames
    while True:
        if not pending_events:
            await trio.lowlevel.wait_readable(sock)
            session.unyielded = 0
            received = _receive(conn, sock, ws)
            if received is None:
                continue
            if not received:
                return
        pending_events = False
        # In a call of its own so that, between frames, nothing of the last message (event,
        # payload, request) stays referenced: an idle connection holds only its state.
        if not await _handle_events(conn, ws, session, config, message):
            return


class _Message:
    """The parts of a fragmented message received so far, and their size in bytes."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[str | bytes] = []
        self.size = 0


async def _handle_events(
    conn: ChatConnection, ws: Connection, session: ChatSession, config: Config, message: _Message
) -> bool:
    """Handle what the fast path, then wsproto, have parsed; False once reading must stop."""
    if isinstance(ws, InboundConnection):
        texts = ws.texts
        if texts is not None:
            ws.texts = None
            final = -1 if ws.fed else len(texts) - 1  # more for wsproto: none is the last
            for i, text in enumerate(texts):
                session.last_read = i == final
                if not await _handle_message(conn, session, config, text):
                    return False  # reading stops: the session goes with it
            session.last_read = False
        if not ws.fed:
            return True  # wsproto was given nothing: it has no event
        ws.fed = False
    max_frame = config.limits.max_frame
    try:
        for event in ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                payload_part = event.data
                # The limit is in bytes; a str's UTF-8 size is at most 4 bytes per character,
                # so the exact (costlier) count is needed only near the limit.
                n = len(payload_part)
                if isinstance(payload_part, str) and message.size + 4 * n > max_frame:
                    n = len(payload_part.encode("utf-8", "surrogatepass"))
                message.size += n
                if message.size > max_frame:
                    conn.close(CloseCode.TOO_BIG, "frame too large")
                    return False
                parts = message.parts
                parts.append(bytes(event.data) if isinstance(event.data, bytearray) else event.data)
                if not event.message_finished:
                    continue
                payload = parts[0] if len(parts) == 1 else _join(parts)
                parts.clear()
                message.size = 0
                if not await _handle_message(conn, session, config, payload):
                    return False
            elif isinstance(event, Ping):
                conn.enqueue(pong_frame(event.payload))
            elif isinstance(event, Pong):
                conn.ping_sent_at = None
            elif isinstance(event, CloseConnection):
                _close_on_close_frame(conn, ws, event)
                return False
    except RemoteProtocolError:
        conn.close(CloseCode.PROTOCOL_ERROR, "bad frame")
        return False
    return True


async def _handle_message(
    conn: ChatConnection, session: ChatSession, config: Config, payload: str | bytes
) -> bool:
    """Decode and handle one whole message; False once reading must stop.

    A request that finds what it needs in memory (a send with its membership cached: the common
    case) does not yield, so what one `recv` gave (up to `admit_per_turn` requests) is admitted
    in one turn and the writer's next batch holds it. trio runs each runnable task once per
    scheduling round, so yielding after `admit_per_turn` requests bounds how long one connection
    holds the loop in a round: a flooding client's other requests wait for the next round,
    behind everyone else's."""
    try:
        request = decode(payload, max_text=config.limits.max_text)
    except ProtocolError as exc:
        session.refuse(exc)
    else:
        await session.handle(request)
        if conn.state is ConnState.CLOSING or conn.state is ConnState.CLOSED:
            return False
    if session.protocol_errors >= config.limits.max_protocol_errors:
        conn.close(CloseCode.POLICY, "too many protocol errors")
        return False
    session.unyielded += 1
    if session.unyielded >= config.limits.admit_per_turn:
        session.unyielded = 0
        await trio.lowlevel.checkpoint()  # cancellable: the drain stops a reader here too
    return True


def _receive(conn: ChatConnection, sock: socket.socket, ws: Connection) -> bool | None:
    """The recv step: feed what the readable socket holds to wsproto. True when bytes were fed,
    None when there was nothing after all (wait again), False when the connection ended."""
    try:
        data = sock.recv(RECV_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        conn.transport_failed()
        return False
    if not data:
        conn.close(CloseCode.GOING_AWAY, "peer went away", by_peer=True)
        return False
    conn.last_seen = trio.current_time()
    try:
        ws.receive_data(data)
    except RemoteProtocolError:
        conn.close(CloseCode.PROTOCOL_ERROR, "bad framing")
        return False
    return True


def _log_opened(peer: str) -> None:
    # logging's findCaller materialises its caller's frame object (~370 bytes), which lives as
    # long as that frame: here that is this short call, not the connection's handler.
    _log.info("connection opened", extra={"peer": peer})


def _close_on_close_frame(conn: ChatConnection, ws: Connection, event: CloseConnection) -> None:
    """A peer's close, or wsproto's verdict on a bad frame (1002, 1007, ...): only a close frame
    from the peer moves wsproto to REMOTE_CLOSING."""
    by_peer = ws.state is ConnectionState.REMOTE_CLOSING
    normal = event.code in (1000, 1001, 1005)
    code = CloseCode.NORMAL if normal else event.code
    conn.close(code, "closed", by_peer=by_peer)


def _join(parts: list[str | bytes]) -> str | bytes:
    if isinstance(parts[0], str):
        return "".join(p for p in parts if isinstance(p, str))
    return b"".join(p for p in parts if isinstance(p, bytes))


async def _finish(conn: ChatConnection, link: WsConnection, grace: float) -> None:
    """Send what is queued (ending in the close frame), half-close, then close the socket."""
    sock = link.sock
    with trio.move_on_after(grace):
        await conn.wait_written()
        if conn.state is not ConnState.CLOSED:
            shutdown_write(sock)
            # Wait for the peer's EOF so closing never resets a connection with unread data.
            while True:
                try:
                    await trio.lowlevel.wait_readable(sock)
                    if not sock.recv(RECV_SIZE):
                        break
                except BlockingIOError:
                    continue
                except OSError:
                    break
    conn.socket_closed()
    link.socket_closed()

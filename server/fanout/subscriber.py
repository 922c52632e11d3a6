"""What the hub needs of a subscribed connection (server.chat.connection.ChatConnection is one).

A protocol, so fan-out depends on no chat module: it reads who the subscriber is and writes to
its outbound buffer.
"""

from __future__ import annotations

from typing import Protocol

from server.transport.outbound import OutboundBuffer


class Subscriber(Protocol):
    conn_id: int  # unique in this process (server.fanout.bus.ConnId)
    user_name: str
    rooms: set[str]  # the hub keeps it: the rooms this connection is subscribed to
    out: OutboundBuffer

"""Talking to one node of a Redis Cluster on a connection of our own: connect (with AUTH) and
read the slot map (`CLUSTER SLOTS`) from the first node that answers. The errors that end a
cluster link's session are listed here too."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from server.redis._cluster_map import Address, ClusterUrl, SlotMap
from server.redis.resp import RedisReplyError, ReplyReader, command

LINK_ERRORS = (
    OSError,
    EOFError,
    ValueError,  # a slot map not understood, or a slot no primary serves
    trio.BrokenResourceError,
    trio.ClosedResourceError,  # the session closed it while a publish was using it
    trio.TooSlowError,
    RedisReplyError,
)


class NodeConnection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.replies = ReplyReader(stream)


async def connect_node(address: Address, url: ClusterUrl, connect_timeout: float) -> NodeConnection:
    """A connection to the node at `address`, authenticated as `url` says."""
    host, port = address
    with trio.fail_after(connect_timeout):
        if url.tls:
            stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(host, port)
        else:
            stream = await trio.open_tcp_stream(host, port)
        conn = NodeConnection(stream)
        if url.password is not None:
            user = [url.username] if url.username else []
            await stream.send_all(command(b"AUTH", *user, url.password))
            if isinstance(reply := await conn.replies.read(), RedisReplyError):
                await stream.aclose()
                raise reply
    return conn


async def read_slot_map(
    known: Sequence[Address], url: ClusterUrl, connect_timeout: float
) -> SlotMap:
    """`CLUSTER SLOTS` from the first of `known` that answers; the last error if none does."""
    error: BaseException = OSError("no cluster node to ask")
    for address in known:
        try:
            conn = await connect_node(address, url, connect_timeout)
        except LINK_ERRORS as exc:
            error = exc
            continue
        try:
            with trio.fail_after(connect_timeout):
                await conn.stream.send_all(command(b"CLUSTER", b"SLOTS"))
                return SlotMap.from_reply(await conn.replies.read(), address)
        except LINK_ERRORS as exc:
            error = exc
        finally:
            with trio.CancelScope(shield=True):
                await conn.stream.aclose()
    raise error

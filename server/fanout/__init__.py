"""Room events to live subscribers: the bus and this process's hub."""

from server.fanout.hub import RoomHub

__all__ = ["RoomHub"]

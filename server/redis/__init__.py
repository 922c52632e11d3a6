"""Redis for several processes: the link (client, pub/sub connections, reconnects) and the bus."""

from server.redis.bus import RedisBus
from server.redis.link import RedisLink, RedisUnavailable

__all__ = ["RedisBus", "RedisLink", "RedisUnavailable"]

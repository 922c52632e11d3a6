"""Redis for several processes and hosts: the link (client, pub/sub connections, reconnects),
the bus, and the shared-state seams (presence, rate limit, caches, revocation)."""

from server.redis._link import RedisFaults
from server.redis.bus import RedisBus
from server.redis.link import RedisLink, RedisUnavailable

__all__ = ["RedisBus", "RedisFaults", "RedisLink", "RedisUnavailable"]

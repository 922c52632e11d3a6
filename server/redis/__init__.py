"""Redis for several processes and hosts: the link (client, pub/sub connections, reconnects),
the bus, and the shared-state seams (presence, rate limit, caches, revocation); a Redis
Cluster's address (`parse_cluster_url`) and slot map, which tests of the cluster link build on."""

from server.redis._cluster_map import Address, ClusterUrl, SlotMap, parse_cluster_url
from server.redis._link import RedisFaults
from server.redis.bus import RedisBus
from server.redis.link import RedisLink, RedisUnavailable

__all__ = [
    "Address",
    "ClusterUrl",
    "RedisBus",
    "RedisFaults",
    "RedisLink",
    "RedisUnavailable",
    "SlotMap",
    "parse_cluster_url",
]

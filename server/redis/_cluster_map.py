"""A Redis Cluster's address (the `redis+cluster://` URL) and its slot map (`CLUSTER SLOTS`).

    redis+cluster://[user:password@]host:port[,host:port...][/]    (rediss+cluster:// for TLS)

The hosts are seeds: any reachable one tells the whole map. The map says which primary owns
each slot; it is read again after every loss, `MOVED` or migration (server.redis.cluster_link).
"""

from __future__ import annotations

import bisect
import urllib.parse
from dataclasses import dataclass

from server.redis.resp import Reply

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

Address = tuple[str, int]


@dataclass(frozen=True)
class ClusterUrl:
    seeds: tuple[Address, ...]
    username: str | None
    password: str | None
    tls: bool


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """The seeds and credentials of a cluster URL; ValueError if it names none."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ValueError("not a redis+cluster:// URL")
    netloc = rest.split("/", 1)[0]
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user) if colon and user else None
        password = urllib.parse.unquote(secret if colon else user)
    seeds = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"cluster seed {item!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    return ClusterUrl(tuple(seeds), username, password, scheme == "rediss+cluster")


class SlotMap:
    """Slot ranges -> the primary that owns them."""

    def __init__(self, ranges: list[tuple[int, int, Address]]) -> None:
        self._ranges = sorted(ranges)
        self._starts = [start for start, _, _ in self._ranges]

    @property
    def primaries(self) -> set[Address]:
        return {address for _, _, address in self._ranges}

    def owner(self, slot: int) -> Address | None:
        """The primary serving `slot`, or None if no one does (the map is incomplete)."""
        i = bisect.bisect_right(self._starts, slot) - 1
        if i < 0:
            return None
        start, end, address = self._ranges[i]
        return address if start <= slot <= end else None

    @classmethod
    def from_reply(cls, reply: Reply, asked: Address) -> SlotMap:
        """Parse `CLUSTER SLOTS`: [[start, end, [host, port, id, ...], replicas...], ...]. A
        primary without an announced host is on the node that answered (`asked`)."""
        if not isinstance(reply, list):
            raise ValueError(f"CLUSTER SLOTS answered {reply!r}")
        ranges = []
        for entry in reply:
            if not isinstance(entry, list) or len(entry) < 3:
                raise ValueError(f"CLUSTER SLOTS entry {entry!r}")
            start, end, primary = entry[0], entry[1], entry[2]
            if not isinstance(start, int) or not isinstance(end, int):
                raise ValueError(f"CLUSTER SLOTS range {entry!r}")
            if not isinstance(primary, list) or not isinstance(primary[1], int):
                raise ValueError(f"CLUSTER SLOTS node {primary!r}")
            host = primary[0].decode() if isinstance(primary[0], bytes) else ""
            ranges.append((start, end, (host if host and host != "?" else asked[0], primary[1])))
        return cls(ranges)

"""Per-user rate limit across nodes: the local bucket answers, Redis keeps the shared account.

`allow` never awaits (the send path's `RateLimiter`): this node's bucket per user answers at
once, and a reconciling task reports what each user spent here to the user's shared bucket in
Redis every `sync_interval` (one Lua call for all users active since the last report). The
script refills the shared bucket at the configured rate (Redis's clock), subtracts what every
node spent (the account may go into debt, down to -burst) and says how many nodes are spending
for the user. Each node then lowers its local bucket to its share of what is left and refills
it at rate / nodes until the next report, so a user sending through three nodes gets about the
configured rate in total, not three times it. Bounds: between two reports a node may overspend
by what its local bucket holds (at most `burst`, for a user new to the node); the debt takes it
back within burst / rate seconds.

While Redis is away each node's local bucket alone limits the user at the full rate (what one
process did before): a user on n nodes may then get n times the rate until Redis is back.
"""

from __future__ import annotations

import trio
from cachetools import TTLCache
from coredis.commands.script import Script

from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike

SYNC_INTERVAL = 0.05  # seconds between reports to the shared buckets
_NODE_WINDOW_MS = 2000  # a node that reported within this long is spending for the user
_CHUNK = 200  # users per script call

# KEYS: per user, its bucket hash and its spending-nodes zset. ARGV: rate, burst, node, window,
# then what this node spent per user. Returns per user {tokens left (a string), nodes spending}.
_RECONCILE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local node, window = ARGV[3], tonumber(ARGV[4])
local out = {}
for i = 1, #KEYS / 2 do
  local bucket, nodes = KEYS[2 * i - 1], KEYS[2 * i]
  local b = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000) - tonumber(ARGV[4 + i])
  if tokens < -burst then tokens = -burst end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil((burst - tokens) / rate * 1000) + window)
  redis.call('ZADD', nodes, now, node)
  redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now - window)
  redis.call('PEXPIRE', nodes, window)
  out[i] = {tostring(tokens), redis.call('ZCARD', nodes)}
end
return out
"""


class _Share:
    """This node's bucket for one user, refilled at rate / nodes."""

    __slots__ = ("nodes", "spent", "tokens", "updated")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.updated = now
        self.spent = 0  # allowed here since the last report
        self.nodes = 1  # nodes spending for the user, as of the last report


class SharedRateLimiter:
    """A `RateLimiter` whose per-user limit holds across every node sharing the Redis."""

    def __init__(
        self,
        link: RedisLinkLike,
        node_id: str,
        rate: float,
        burst: float,
        faults: RedisFaults,
        *,
        sync_interval: float = SYNC_INTERVAL,
        max_users: int = 100_000,
    ) -> None:
        self._link = link
        self._node = node_id
        self._rate = rate
        self._burst = burst
        self._faults = faults
        self._interval = sync_interval
        # Idle long enough to refill even at a small share: as good as a fresh one.
        ttl = 10 * burst / rate + 1.0 if rate > 0 else 1.0
        self._users: TTLCache[int, _Share] = TTLCache(maxsize=max_users, ttl=ttl)
        self._dirty: dict[int, _Share] = {}
        self._wake = trio.Event()
        self._script = Script(script=_RECONCILE)

    def allow(self, user_id: int, now: float) -> bool:
        if self._rate <= 0:
            return True
        share = self._users.get(user_id)
        if share is None:
            share = _Share(self._burst, now)
        self._users[user_id] = share  # (re)sets its expiry
        share.tokens = min(
            self._burst, share.tokens + (now - share.updated) * self._rate / share.nodes
        )
        share.updated = now
        if share.tokens < 1:
            return False
        share.tokens -= 1
        share.spent += 1
        self._dirty[user_id] = share
        self._wake.set()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report spending to the shared buckets, at most every `sync_interval`, while any."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.reconcile()
            await trio.sleep(self._interval)

    async def reconcile(self) -> None:
        """Report what was spent here since the last report; adopt each user's shared state."""
        dirty, self._dirty = self._dirty, {}
        groups: dict[int, list[tuple[int, _Share]]] = {}
        for user_id, share in dirty.items():
            groups.setdefault(user_id % RATE_TAGS, []).append((user_id, share))
        for users in groups.values():
            for start in range(0, len(users), _CHUNK):
                await self._report(users[start : start + _CHUNK])

    async def _report(self, chunk: list[tuple[int, _Share]]) -> None:
        """One script call for users whose keys share a hash tag (one cluster slot)."""
        keys: list[str] = []
        args: list[str] = [repr(self._rate), repr(self._burst), self._node]
        args.append(str(_NODE_WINDOW_MS))
        for user_id, share in chunk:
            keys += [bucket_key(self._link, user_id), nodes_key(self._link, user_id)]
            args.append(str(share.spent))
            share.spent = 0
        try:
            replies: list[list[str | int]] = await self._script(
                keys, args, client=self._link.client
            )
        except REDIS_DOWN as exc:
            self._faults.failed(exc)
            for _, share in chunk:
                share.nodes = 1  # the local bucket alone, at the full rate
            return
        self._faults.succeeded()
        for (_, share), (left, nodes) in zip(chunk, replies, strict=True):
            share.nodes = max(1, int(nodes))
            share.tokens = min(share.tokens, float(left) / share.nodes)


# A script call reports many users at once; on a Redis Cluster its keys must share one slot, so
# users are spread over RATE_TAGS hash tags (`{rate-k}`, k = user id % RATE_TAGS) and reported
# one tag at a time: the shared buckets spread over up to RATE_TAGS slots.
RATE_TAGS = 16


def bucket_key(link: RedisLinkLike, user_id: int) -> str:
    return link.key(f"{{rate-{user_id % RATE_TAGS}}}", "bucket", str(user_id))


def nodes_key(link: RedisLinkLike, user_id: int) -> str:
    return link.key(f"{{rate-{user_id % RATE_TAGS}}}", "nodes", str(user_id))

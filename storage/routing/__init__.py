"""Routing above the backends: which database answers a call (read replicas; message shards).

The shards' own versioned schema (`SHARD_MIGRATIONS`, applied by `apply_shard_schema`) is what
tests and benchmarks of the shards prepare a database with.
"""

from storage.protocols import ReplicaLag
from storage.routing._health import ProbePolicy, ReplicaReads, State
from storage.routing._shard_schema import SHARD_LOCK_KEY, SHARD_MIGRATIONS, SHARD_VERSION_TABLE
from storage.routing._shard_schema import apply as apply_shard_schema
from storage.routing.attach import attach_replicas
from storage.routing.directory import Directory
from storage.routing.move import MoveFailed, MoveResult, move_logical
from storage.routing.pin import pin_room
from storage.routing.replicas import FALLBACK_REASONS, ReplicaRouter, RouterCounts
from storage.routing.shard_events import ShardOutbox, ShardOutboxes
from storage.routing.sharded import ShardedMessageStore
from storage.routing.sharded_parts import PartListener
from storage.routing.sharded_store import ShardedStore
from storage.routing.shards import LOGICAL_SHARDS, logical_shard

__all__ = [
    "FALLBACK_REASONS",
    "LOGICAL_SHARDS",
    "SHARD_LOCK_KEY",
    "SHARD_MIGRATIONS",
    "SHARD_VERSION_TABLE",
    "Directory",
    "MoveFailed",
    "MoveResult",
    "PartListener",
    "ProbePolicy",
    "ReplicaLag",
    "ReplicaReads",
    "ReplicaRouter",
    "RouterCounts",
    "ShardOutbox",
    "ShardOutboxes",
    "ShardedMessageStore",
    "ShardedStore",
    "State",
    "apply_shard_schema",
    "attach_replicas",
    "logical_shard",
    "move_logical",
    "pin_room",
]

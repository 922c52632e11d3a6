"""Routing above the backends: which database answers a call (read replicas; message shards)."""

from storage.routing._health import ProbePolicy, ReplicaLag, ReplicaReads, State
from storage.routing.attach import attach_replicas
from storage.routing.directory import Directory
from storage.routing.move import MoveFailed, MoveResult, move_logical
from storage.routing.pin import pin_room
from storage.routing.replicas import FALLBACK_REASONS, ReplicaRouter, RouterCounts
from storage.routing.sharded import ShardedMessageStore
from storage.routing.sharded_parts import PartListener
from storage.routing.sharded_store import ShardedStore
from storage.routing.shards import LOGICAL_SHARDS, logical_shard

__all__ = [
    "FALLBACK_REASONS",
    "LOGICAL_SHARDS",
    "Directory",
    "MoveFailed",
    "MoveResult",
    "PartListener",
    "ProbePolicy",
    "ReplicaLag",
    "ReplicaReads",
    "ReplicaRouter",
    "RouterCounts",
    "ShardedMessageStore",
    "ShardedStore",
    "State",
    "attach_replicas",
    "logical_shard",
    "move_logical",
    "pin_room",
]

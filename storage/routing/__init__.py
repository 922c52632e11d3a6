"""Routing above the backends: which database answers a call (read replicas; later, shards)."""

from storage.routing._health import ProbePolicy, ReplicaLag, ReplicaReads, State
from storage.routing.attach import attach_replicas
from storage.routing.replicas import FALLBACK_REASONS, ReplicaRouter, RouterCounts

__all__ = [
    "FALLBACK_REASONS",
    "ProbePolicy",
    "ReplicaLag",
    "ReplicaReads",
    "ReplicaRouter",
    "RouterCounts",
    "State",
    "attach_replicas",
]

"""Read replicas put in front of a store's message reads, from their database URLs."""

from __future__ import annotations

from collections.abc import Sequence

from storage.composite import CompositeStore
from storage.routing._health import ProbePolicy, ReplicaReads
from storage.routing.replicas import ReplicaRouter


def attach_replicas(
    store: CompositeStore, urls: Sequence[str], policy: ProbePolicy
) -> ReplicaRouter | None:
    """Route `store`'s history and resume reads over the PostgreSQL replicas at `urls` (None,
    and `store` unchanged, if there are none). Open the router after the store, close it
    before, and run its probes (`router.run`) while serving."""
    if not urls:
        return None
    from storage.postgres.replica import PostgresReplica

    reads: list[tuple[str, ReplicaReads]] = []
    for url in urls:
        replica = PostgresReplica(url, statement_timeout=policy.timeout)
        reads.append((replica.target, replica))
    router = ReplicaRouter(store.messages, reads, policy)
    store.messages = router
    return router

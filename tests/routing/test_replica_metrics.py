"""The router's state as /metrics series (the scrape reads the router; fakes below it)."""

from __future__ import annotations

from server.ops.metrics import Metrics
from storage.routing import ProbePolicy, ReplicaLag, ReplicaRouter

from .fakes import FakePrimary, FakeReplica, new_message


def _series(metrics: Metrics) -> dict[str, float]:
    body, _ = metrics.exposition()
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("hibiki_db_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_replica_lag_state_and_reads_are_exported() -> None:
    primary = FakePrimary()
    primary.add_room("lobby")
    await primary.append_batch([new_message("lobby", "hi")])
    up = FakeReplica(primary, lag=ReplicaLag(0.25, 4096))
    down = FakeReplica(primary, down=True)
    router = ReplicaRouter(primary, [("db-a:5432/h", up), ("db-b:5432/h", down)], ProbePolicy())
    for replica in router.replicas:
        await replica.probe()
    metrics = Metrics("node-1")
    metrics.watch_replicas(router)
    await router.history("lobby", None, 50)  # turn 0: db-a
    await router.history("lobby", None, 50)  # turn 1: db-b is down, so db-a again
    up.freeze()
    await primary.append_batch([new_message("lobby", "newer")])
    await router.history("lobby", None, 50)  # db-a lacks seq 2: the primary
    series = _series(metrics)
    assert series['hibiki_db_replica_up{replica="db-a:5432/h"}'] == 1
    assert series['hibiki_db_replica_up{replica="db-b:5432/h"}'] == 0
    assert series['hibiki_db_replica_lag_seconds{replica="db-a:5432/h"}'] == 0.25
    assert series['hibiki_db_replica_lag_bytes{replica="db-a:5432/h"}'] == 4096
    assert 'hibiki_db_replica_lag_seconds{replica="db-b:5432/h"}' not in series  # never probed ok
    assert series['hibiki_db_replica_reads_total{replica="db-a:5432/h"}'] == 2
    assert series['hibiki_db_primary_reads_total{reason="behind"}'] == 1
    assert series['hibiki_db_primary_reads_total{reason="failed"}'] == 0


def test_without_replicas_the_primary_reads_series_are_zero() -> None:
    series = _series(Metrics())
    assert series['hibiki_db_primary_reads_total{reason="no_replica"}'] == 0
    assert not any(name.startswith("hibiki_db_replica_up{") for name in series)

"""The streaming-replica fixture itself (tests/pg_cluster.py): it replicates, its replica can
lag, stop and come back, and nothing is left behind, even when the block fails."""

from __future__ import annotations

import socket

import pytest

from ..pg_cluster import HOST, PgCluster, require_pg_cluster


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _count(cluster: PgCluster, which: str) -> int:
    server = cluster.primary if which == "primary" else cluster.replica
    with server.connect("t") as conn:
        row = conn.execute("SELECT count(*) FROM items").fetchone()
    assert row is not None
    return int(row[0])


def test_replica_streams_lags_when_paused_and_returns_after_a_restart() -> None:
    require_pg_cluster()
    with PgCluster.started() as cluster:
        cluster.create_database("t")
        with cluster.primary.connect("t") as conn:
            conn.execute("CREATE TABLE items (n int)")
            conn.execute("INSERT INTO items VALUES (1)")
        cluster.wait_caught_up()
        assert _count(cluster, "replica") == 1
        cluster.pause_replay()
        with cluster.primary.connect("t") as conn:
            conn.execute("INSERT INTO items VALUES (2)")
        assert (_count(cluster, "primary"), _count(cluster, "replica")) == (2, 1)
        cluster.resume_replay()
        cluster.wait_caught_up()
        assert _count(cluster, "replica") == 2
        cluster.stop_replica()
        assert not _accepts(cluster.replica.port)
        with cluster.primary.connect("t") as conn:
            conn.execute("INSERT INTO items VALUES (3)")
        cluster.start_replica()
        cluster.wait_caught_up()
        assert _count(cluster, "replica") == 3


def test_both_servers_stop_and_the_dir_goes_even_when_the_block_fails() -> None:
    require_pg_cluster()
    with pytest.raises(RuntimeError, match="test failed"), PgCluster.started() as cluster:
        root, ports = cluster.root, (cluster.primary.port, cluster.replica.port)
        assert all(_accepts(port) for port in ports)
        raise RuntimeError("test failed")
    assert not root.exists()
    assert not any(_accepts(port) for port in ports)

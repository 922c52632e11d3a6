"""A node on Redis stops cleanly: SIGTERM drains it and it exits 0 with no traceback (coredis's
pub/sub cleanup used to raise ClosedResourceError out of the cancelled control channel). On SQLite
and PostgreSQL (`cluster_db`): the race was in the Redis bus's cleanup, and the store's pool is
closed in the same drain."""

from __future__ import annotations

import signal

import trio

from ..conftest import STEP
from .conftest import log_lines, open_cluster


async def test_sigterm_stops_redis_nodes_with_exit_0_and_no_traceback(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    # Three nodes: the cleanup race was seen in one process of three.
    async with open_cluster(cluster_db, redis_url, namespace, 3) as cluster:
        for node in cluster.nodes:
            node.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STEP * 3):
            for node in cluster.nodes:
                await node.process.wait()
                while True:  # its stderr reader may not have taken the last lines yet
                    if any(line.get("msg") == "stopped" for line in log_lines(node)):
                        break
                    await trio.sleep(0.02)
        for node in cluster.nodes:
            assert node.process.returncode == 0, node.log.decode()
            assert b"Traceback" not in node.log, node.log.decode()

"""Replica routing against a real PostgreSQL primary and streaming replica (tests/pg_cluster.py):
reads go to the replica when it has caught up, to the primary while its replay is paused, keep
working while it is stopped, and return to it by themselves once it is back. Then a whole server
with `--db-replica`: /readyz and /metrics show the replica.

One cluster serves the module (it takes seconds to make); each test has a database of its own,
and leaves the replica running and replaying.
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trio

from server.app import serve
from server.config import Config
from server.ops.metrics import Metrics
from storage import CompositeStore, NewMessage, open_store
from storage.routing import ProbePolicy, ReplicaRouter, State, attach_replicas

from ..pg_cluster import PgCluster, require_pg_cluster

POLICY = ProbePolicy(interval=0.05, timeout=2.0, max_backoff=0.2, max_lag=30.0)
STEP = 30.0  # bound on one step on a loaded 2-core machine


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    require_pg_cluster()
    with PgCluster.started() as made:
        yield made


@pytest.fixture
def dbname(cluster: PgCluster) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    cluster.create_database(name)
    yield name
    if not cluster.replica.running:
        cluster.start_replica()
    cluster.resume_replay()


@pytest.fixture
async def routed(cluster: PgCluster, dbname: str) -> AsyncIterator[tuple[CompositeStore, str]]:
    """A store on the primary, with a room of 120 messages replayed on the replica."""
    async with open_store(cluster.primary.url(dbname), scrypt_n=2**4) as store:
        user = await store.create_user("alice", "correct horse")
        await store.create_room("lobby", user.id)
        await store.append_batch([_message(user.id, i) for i in range(1, 121)])
        await trio.to_thread.run_sync(cluster.wait_caught_up)
        yield store, cluster.replica.url(dbname)


def _message(user_id: int, i: int) -> NewMessage:
    return NewMessage("lobby", user_id, "alice", f"message {i}", f"c{i}")


async def _until_state(router: ReplicaRouter, state: State) -> None:
    """The replica reaches `state` by its probes alone (a probe every POLICY.interval)."""
    with trio.fail_after(STEP):
        await router.replicas[0].wait_until(state)


async def test_reads_use_the_replica_when_caught_up_and_the_primary_while_it_lags(
    cluster: PgCluster, routed: tuple[CompositeStore, str]
) -> None:
    store, replica_url = routed
    primary_page = await store.history("lobby", None, 50)
    router = attach_replicas(store, [replica_url], POLICY)
    assert router is not None and store.messages is router
    await router.open()
    try:
        await router.replicas[0].probe()
        assert router.replicas[0].state is State.UP
        assert await store.history("lobby", None, 50) == primary_page
        assert [m.seq for m in await store.messages_after("lobby", 100, 50)] == list(
            range(101, 121)
        )
        assert router.counts.replica_reads == 2
        await trio.to_thread.run_sync(cluster.pause_replay)
        user = await store.user_for_token(await store.create_token(1, 60))
        assert user is not None
        [new] = await store.append_batch([_message(user.id, 121)])
        page, _ = await store.history("lobby", None, 50)  # read-your-writes: from the primary
        assert page[-1].id == new.message.id
        assert router.counts.primary_reads["behind"] == 1
        older, _ = await store.history("lobby", 100, 50)  # seqs 50..99: the replica has them
        assert [m.seq for m in older] == list(range(50, 100))
        assert router.counts.replica_reads == 3
        await router.replicas[0].probe()
        lag = router.replicas[0].lag
        assert lag is not None and lag.bytes > 0  # received, not replayed
        await trio.to_thread.run_sync(cluster.resume_replay)
        await trio.to_thread.run_sync(cluster.wait_caught_up)
        page, _ = await store.history("lobby", None, 50)
        assert page[-1].seq == 121 and router.counts.replica_reads == 4
    finally:
        await router.aclose()


async def test_a_stopped_replica_is_skipped_and_used_again_once_it_is_back(
    cluster: PgCluster, routed: tuple[CompositeStore, str]
) -> None:
    store, replica_url = routed
    router = attach_replicas(store, [replica_url], POLICY)
    assert router is not None
    await router.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(router.run)
            await _until_state(router, State.UP)
            await store.history("lobby", None, 50)
            assert router.counts.replica_reads == 1
            await trio.to_thread.run_sync(cluster.stop_replica)
            for i in itertools.count(122):  # reads keep working, from the primary
                page, _ = await store.history("lobby", None, 10)
                assert page[-1].seq == i - 2 and len(page) == 10
                await store.append_batch([_message(1, i - 1)])
                if router.replicas[0].state is State.DOWN:
                    break
            assert (
                router.counts.primary_reads["failed"] + router.counts.primary_reads["no_replica"]
                >= 1
            )
            await store.history("lobby", None, 10)
            served = router.counts.replica_reads
            await trio.to_thread.run_sync(cluster.start_replica)
            await trio.to_thread.run_sync(cluster.wait_caught_up)
            await _until_state(router, State.UP)  # by its probes: nothing told it
            page, _ = await store.history("lobby", None, 10)
            assert page[-1].seq == await store.last_seq("lobby")
            assert router.counts.replica_reads == served + 1
            nursery.cancel_scope.cancel()
    finally:
        await router.aclose()


async def test_a_server_with_a_replica_shows_it_in_readyz_and_metrics(
    cluster: PgCluster, dbname: str, routed: tuple[CompositeStore, str]
) -> None:
    _, replica_url = routed
    config = Config.from_flat(
        port=0,
        db_path=cluster.primary.url(dbname),
        replicas=(replica_url,),
        replica_probe_interval=POLICY.interval,
        scrypt_n=2**4,
        metrics=True,
    )
    stop = trio.Event()
    metrics = Metrics(config.server.server_id)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve, config, stop, metrics=metrics))
        router = metrics._replicas  # the router serve() built, as /metrics reads it
        assert router is not None
        await _until_state(router, State.UP)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ready = (await http.get("/readyz")).json()
            assert ready["status"] == "ready" and ready["replicas"][0]["state"] == "up"
            assert ready["replicas"][0]["name"] == replica_url.split("@", 1)[1]
            login = await http.post(
                "/api/login", json={"name": "alice", "password": "correct horse"}
            )
            token = login.json()["token"]
            history = await http.get(
                "/api/rooms/lobby/messages", headers={"Authorization": f"Bearer {token}"}
            )
            assert history.status_code == 200
            assert history.json()["messages"][-1]["seq"] == 120
            metrics = (await http.get("/metrics")).text
            assert "hibiki_db_replica_up{" in metrics
            assert 'hibiki_db_replica_reads_total{replica="' in metrics
            await trio.to_thread.run_sync(cluster.stop_replica)
            await _until_state(router, State.DOWN)
            ready_response = await http.get("/readyz")
            assert ready_response.status_code == 200  # degraded, not unready
            assert ready_response.json()["replicas"][0]["state"] == "down"
            history = await http.get(
                "/api/rooms/lobby/messages", headers={"Authorization": f"Bearer {token}"}
            )
            assert history.json()["messages"][-1]["seq"] == 120  # from the primary
        stop.set()

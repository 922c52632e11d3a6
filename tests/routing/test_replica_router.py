"""ReplicaRouter's routing rules over in-memory databases (tests/routing/fakes.py).

The clock is trio's autojump clock: probe intervals, backoffs and read timeouts pass instantly
and exactly.
"""

from __future__ import annotations

import itertools

import pytest
import trio

from storage import NotFound
from storage.routing import ProbePolicy, ReplicaLag, ReplicaRouter, State

from .fakes import FakePrimary, FakeReplica, new_message

POLICY = ProbePolicy(interval=1.0, timeout=2.0, max_backoff=8.0, max_lag=5.0)


async def _room_with(primary: FakePrimary, room: str, n: int) -> None:
    primary.add_room(room)
    await primary.append_batch([new_message(room, f"m{i}") for i in range(1, n + 1)])


async def _probed(router: ReplicaRouter) -> None:
    for replica in router.replicas:
        await replica.probe()


@pytest.fixture
async def setup() -> tuple[FakePrimary, FakeReplica, ReplicaRouter]:
    primary = FakePrimary()
    await _room_with(primary, "lobby", 120)
    replica = FakeReplica(primary)
    router = ReplicaRouter(primary, [("replica-a", replica)], POLICY)
    await _probed(router)
    return primary, replica, router


async def test_reads_go_to_a_caught_up_replica(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    page, more = await router.history("lobby", None, 50)
    assert [m.seq for m in page] == list(range(71, 121)) and more
    after = await router.messages_after("lobby", 100, 50)
    assert [m.seq for m in after] == list(range(101, 121))
    assert replica.page_reads == 2 and primary.page_reads == 0
    assert router.counts.replica_reads == 2


async def test_newest_page_from_a_lagging_replica_goes_to_the_primary(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    replica.freeze()
    await primary.append_batch([new_message("lobby", "after freeze")])
    page, _ = await router.history("lobby", None, 50)
    assert page[-1].text == "after freeze"
    assert primary.page_reads == 1  # the replica's page (read with its last_seq) is dropped
    assert router.counts.primary_reads["behind"] == 1


async def test_an_older_page_the_replica_holds_needs_no_primary_read(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    replica.freeze()
    await primary.append_batch([new_message("lobby", "new") for _ in range(10)])
    calls = primary.last_seq_calls
    page, more = await router.history("lobby", 121, 50)  # seqs 71..120: all replayed
    assert [m.seq for m in page] == list(range(71, 121)) and more
    assert primary.last_seq_calls == calls and replica.page_reads == 1
    page, _ = await router.history("lobby", 123, 50)  # needs 122: not replayed
    assert page[-1].seq == 122 and primary.page_reads == 1


async def test_a_full_resume_page_the_replica_holds_needs_no_primary_read(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    replica.freeze()
    await primary.append_batch([new_message("lobby", "new") for _ in range(5)])
    calls = primary.last_seq_calls
    page = await router.messages_after("lobby", 10, 100)  # 11..110, all replayed
    assert [m.seq for m in page] == list(range(11, 111))
    assert primary.last_seq_calls == calls and replica.page_reads == 1
    tail = await router.messages_after("lobby", 110, 100)  # the tail: 111..125 on the primary
    assert [m.seq for m in tail] == list(range(111, 126))
    assert primary.last_seq_calls == calls + 1 and primary.page_reads == 1


async def test_a_tail_read_on_a_replica_that_has_everything_stays_on_it(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    tail = await router.messages_after("lobby", 110, 100)
    assert [m.seq for m in tail] == list(range(111, 121))
    assert primary.last_seq_calls == 1 and primary.page_reads == 0 and replica.page_reads == 1


async def test_a_writer_reads_its_own_write_although_the_replica_lags(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    _, replica, router = setup
    replica.freeze()
    [appended] = await router.append_batch([new_message("lobby", "mine")])
    after = await router.messages_after("lobby", appended.message.seq - 1, 50)
    assert [m.text for m in after] == ["mine"]
    page, _ = await router.history("lobby", None, 1)
    assert page[0].seq == appended.message.seq


async def test_a_room_not_yet_on_the_replica_is_read_from_the_primary(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    replica.freeze()
    await _room_with(primary, "new-room", 3)
    page, more = await router.history("new-room", None, 50)
    assert [m.seq for m in page] == [1, 2, 3] and not more
    assert router.replicas[0].state is State.UP  # a missing room is lag, not a fault


async def test_an_unknown_room_is_not_found(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    _, _, router = setup
    with pytest.raises(NotFound):
        await router.history("nowhere", None, 50)
    with pytest.raises(NotFound):
        await router.messages_after("nowhere", 0, 50)


async def test_a_failing_replica_is_skipped_until_a_probe_succeeds(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    replica.down = True
    page, _ = await router.history("lobby", None, 50)
    assert page[-1].seq == 120 and primary.page_reads == 1
    assert router.replicas[0].state is State.DOWN
    assert router.counts.primary_reads["failed"] == 1
    calls = replica.calls
    await router.history("lobby", None, 50)
    assert replica.calls == calls  # skipped, not retried per read
    assert router.counts.primary_reads["no_replica"] == 1
    replica.down = False
    await router.replicas[0].probe()
    await router.history("lobby", None, 50)
    assert replica.page_reads == 1 and router.replicas[0].state is State.UP


async def test_a_hung_replica_times_out_and_the_primary_answers(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter], autojump_clock: trio.abc.Clock
) -> None:
    _, replica, router = setup
    replica.hang = True
    start = trio.current_time()
    after = await router.messages_after("lobby", 118, 50)
    assert [m.seq for m in after] == [119, 120]
    assert trio.current_time() - start == pytest.approx(POLICY.timeout)
    assert router.replicas[0].state is State.DOWN
    assert router.status()[0]["error"] == "timed out"


async def test_a_replica_lagging_past_the_bound_is_not_used_until_it_catches_up(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter],
) -> None:
    primary, replica, router = setup
    replica.lag = ReplicaLag(seconds=POLICY.max_lag + 1, bytes=1 << 20)
    await _probed(router)
    assert router.replicas[0].state is State.LAGGING
    await router.history("lobby", 50, 10)  # the replica holds it, but is past the bound
    assert replica.page_reads == 0 and primary.page_reads == 1
    status = router.status()[0]
    assert status["state"] == "lagging" and status["lag_bytes"] == 1 << 20
    replica.lag = ReplicaLag(seconds=0.5, bytes=0)
    await _probed(router)
    await router.history("lobby", 50, 10)
    assert replica.page_reads == 1


async def test_probes_of_a_down_replica_back_off_and_it_returns_by_itself(
    autojump_clock: trio.abc.Clock,
) -> None:
    primary = FakePrimary()
    await _room_with(primary, "lobby", 3)
    replica = FakeReplica(primary, down=True)
    router = ReplicaRouter(primary, [("replica-a", replica)], POLICY)
    probes: list[float] = []
    real_lag = replica.replica_lag

    async def recorded_lag() -> ReplicaLag:
        probes.append(trio.current_time())
        return await real_lag()

    replica.replica_lag = recorded_lag  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(router.run)
        await trio.sleep(30)
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(probes)]
        assert probes[0] == start
        assert gaps[:5] == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped at max_backoff
        assert router.replicas[0].state is State.DOWN
        replica.down = False
        await trio.sleep(POLICY.max_backoff)
        assert router.replicas[0].state is State.UP
        await router.history("lobby", None, 50)
        assert replica.page_reads == 1
        nursery.cancel_scope.cancel()


async def test_reads_rotate_over_usable_replicas() -> None:
    primary = FakePrimary()
    await _room_with(primary, "lobby", 10)
    a, b = FakeReplica(primary), FakeReplica(primary)
    router = ReplicaRouter(primary, [("a", a), ("b", b)], POLICY)
    await _probed(router)
    for _ in range(4):
        await router.history("lobby", None, 5)
    assert (a.page_reads, b.page_reads) == (2, 2)
    b.down = True
    for _ in range(3):
        await router.history("lobby", None, 5)
    assert primary.page_reads == 1  # b's one failure; after it, a serves every read
    assert a.page_reads == 4


async def test_until_the_first_probe_every_read_goes_to_the_primary() -> None:
    primary = FakePrimary()
    await _room_with(primary, "lobby", 3)
    replica = FakeReplica(primary)
    router = ReplicaRouter(primary, [("a", replica)], POLICY)
    await router.history("lobby", None, 50)
    assert replica.calls == 0 and router.counts.primary_reads["no_replica"] == 1
    assert router.status() == [{"name": "a", "state": "unknown"}]


async def test_the_newest_page_asks_the_primary_while_the_replica_reads(
    setup: tuple[FakePrimary, FakeReplica, ReplicaRouter], autojump_clock: trio.abc.Clock
) -> None:
    primary, replica, router = setup
    primary.delay = replica.delay = 0.5
    start = trio.current_time()
    page, _ = await router.history("lobby", None, 50)
    assert trio.current_time() - start == pytest.approx(0.5)  # at once, not one after the other
    assert page[-1].seq == 120 and primary.last_seq_calls == 1 and primary.page_reads == 0

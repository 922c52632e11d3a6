"""Brute-force protection end to end: a real server, httpx clients bound to different loopback
addresses (127.0.0.x), real scrypt. The rules themselves are unit-tested in test_login_throttle.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import STEP, RunningServer, make_config, register, running_server

PASSWORD = "correct horse"  # what conftest.register sets
WRONG = {"password": "not the password"}


@asynccontextmanager
async def client_from(server: RunningServer, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from `address` (any 127.0.0.x is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=server.http, transport=transport, timeout=STEP) as c:
        yield c


async def login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/login", json={"name": name, "password": password})


def assert_throttled(response: httpx.Response, limit_words: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_attempts"
    assert limit_words in error["message"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


async def throttled_count(client: httpx.AsyncClient, limit: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hibiki_login_throttled_total" and sample.labels == {"limit": limit}:
                return sample.value
    raise AssertionError(f"no hibiki_login_throttled_total{{limit={limit!r}}}")


def _config(tmp_path: Path, **overrides: Any) -> Any:
    base: dict[str, Any] = {"login_address_backoff": 60.0}  # blocks outlast any slow step
    return make_config(tmp_path, **(base | overrides))


async def test_wrong_passwords_from_one_address_get_429_with_retry_after(tmp_path: Path) -> None:
    config = _config(tmp_path, login_address_limit=3, login_account_limit=0)
    with trio.fail_after(STEP * 3):
        async with (
            running_server(config) as server,
            client_from(server, "127.0.0.2") as guesser,
            client_from(server, "127.0.0.3") as user,
        ):
            alice = await register(user)
            for _ in range(3):
                assert (await login(guesser, alice.name, WRONG["password"])).status_code == 401
            # Refused before the KDF runs: the right password does not help now.
            refused = await login(guesser, alice.name)
            assert assert_throttled(refused, "from this address") == 60
            assert (await login(user, alice.name)).status_code == 200  # another address
            assert await throttled_count(user, "address") == 1


async def test_the_account_limit_refuses_addresses_that_have_failed_not_clean_ones(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, login_address_limit=100, login_account_limit=3)
    with trio.fail_after(STEP * 3):
        async with running_server(config) as server, client_from(server, "127.0.0.1") as http:
            alice = await register(http)
            async with (
                client_from(server, "127.0.0.2") as a,
                client_from(server, "127.0.0.3") as b,
                client_from(server, "127.0.0.4") as clean,
                client_from(server, "127.0.0.5") as real_user,
            ):
                for guesser in (a, a, b):
                    assert (await login(guesser, alice.name, "guess")).status_code == 401
                for guesser in (a, b):
                    retry_after = assert_throttled(
                        await login(guesser, alice.name), "for this account"
                    )
                    assert retry_after > 200  # until its own failures are forgotten (5 min)
                assert (await login(a, "someone-else", "guess")).status_code == 401
                # An address that has not failed is not locked out by the others' guesses ...
                assert (await login(clean, alice.name, "guess")).status_code == 401
                assert_throttled(await login(clean, alice.name), "for this account")
                # ... so the real user gets in, which clears the account's failures.
                assert (await login(real_user, alice.name)).status_code == 200
                assert (await login(a, alice.name, "guess")).status_code == 401
                assert await throttled_count(http, "account") == 3


async def test_a_success_clears_the_accounts_failures_but_not_the_addresss(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, login_address_limit=3, login_account_limit=3)
    with trio.fail_after(STEP * 3):
        async with (
            running_server(config) as server,
            client_from(server, "127.0.0.2") as a,
            client_from(server, "127.0.0.3") as b,
        ):
            alice = await register(b)
            mallory = await register(a)
            for _ in range(2):
                assert (await login(b, alice.name, "guess")).status_code == 401
            assert (await login(b, alice.name)).status_code == 200  # clears alice's two
            for _ in range(2):  # without the reset the account would be at its limit now
                assert (await login(a, alice.name, "guess")).status_code == 401
            # a's own success (its own account) does not reset a's count: the next is its third.
            assert (await login(a, mallory.name)).status_code == 200
            assert (await login(a, alice.name, "guess")).status_code == 401
            assert_throttled(await login(a, mallory.name), "from this address")


async def test_failed_registrations_count_towards_the_address_limit(tmp_path: Path) -> None:
    config = _config(tmp_path, login_address_limit=2)
    with trio.fail_after(STEP * 3):
        async with (
            running_server(config) as server,
            client_from(server, "127.0.0.2") as prober,
            client_from(server, "127.0.0.3") as other,
        ):
            taken = await register(other)
            body = {"name": taken.name, "password": PASSWORD}
            for _ in range(2):  # probing for names that exist
                assert (await prober.post("/api/register", json=body)).status_code == 409
            fresh = {"name": "fresh-name", "password": PASSWORD}
            assert_throttled(await prober.post("/api/register", json=fresh), "from this address")
            assert_throttled(await login(prober, taken.name), "from this address")
            assert (await other.post("/api/register", json=fresh)).status_code == 201


async def test_a_trusted_proxys_forwarded_address_is_the_client(tmp_path: Path) -> None:
    config = _config(tmp_path, login_address_limit=2, trusted_proxies=("127.0.0.1",))
    with trio.fail_after(STEP * 3):
        async with (
            running_server(config) as server,
            client_from(server, "127.0.0.1") as proxy,
            client_from(server, "127.0.0.2") as direct,
        ):
            alice = await register(direct)

            async def via_proxy(client: str, password: str = "guess") -> httpx.Response:
                return await proxy.post(
                    "/api/login",
                    json={"name": alice.name, "password": password},
                    headers={"X-Forwarded-For": client},
                )

            for _ in range(2):
                assert (await via_proxy("198.51.100.7")).status_code == 401
            assert_throttled(await via_proxy("198.51.100.7", PASSWORD), "from this address")
            assert (await via_proxy("198.51.100.8", PASSWORD)).status_code == 200
            # What the client put in front of the proxy's entry changes nothing.
            assert_throttled(await via_proxy("198.51.100.8, 198.51.100.7"), "from this address")
            # From an address that is not a trusted proxy the header is ignored.
            spoofed = await direct.post(
                "/api/login",
                json={"name": alice.name, "password": PASSWORD},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
            assert spoofed.status_code == 200


async def test_a_login_from_another_address_is_served_in_turn_during_a_flood(
    tmp_path: Path,
) -> None:
    # Throttling off, so the flood is all admitted: this is the fairness of the KDF queue alone.
    # A costlier scrypt (a few ms) so the flood really queues on this machine.
    # 80 requests at once from one address: the per-address pending cap is not under test.
    config = _config(
        tmp_path,
        login_address_limit=0,
        login_account_limit=0,
        scrypt_n=2**13,
        max_pending_per_address=0,
    )
    flood_size = 80  # more than one address may queue (32 + 2 running): the excess is refused
    with trio.fail_after(STEP * 6):
        async with (
            running_server(config) as server,
            client_from(server, "127.0.0.2") as flooder,
            client_from(server, "127.0.0.3") as user,
        ):
            alice = await register(user)
            statuses: list[int] = []
            first_answer = trio.Event()

            async def bad_login() -> None:
                response = await login(flooder, "nobody", "guess")
                statuses.append(response.status_code)
                first_answer.set()

            async with trio.open_nursery() as nursery:
                for _ in range(flood_size):
                    nursery.start_soon(bad_login)
                await first_answer.wait()  # the server holds the flood by now
                served_before = statuses.count(401)
                response = await login(user, alice.name)
                served_meanwhile = statuses.count(401) - served_before
            assert response.status_code == 200
            # A FIFO queue serves it after all the flood queued ahead (34 or more, see below);
            # in turn it waits for the KDFs running and about one more.
            assert served_meanwhile <= 34 // 2, (served_meanwhile, statuses.count(401))
            assert len(statuses) == flood_size
            refused = statuses.count(429)
            assert 0 < refused <= flood_size - 34  # the first 34 always find room
            assert statuses.count(401) + refused == flood_size
            assert await throttled_count(user, "queue") == refused

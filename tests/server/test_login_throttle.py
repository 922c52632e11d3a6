"""The login throttle's rules on a fake clock, the fair KDF limiter, client address resolution and
the throttle's settings. End-to-end behaviour against a running server: test_login_flood.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import trio
import trio.testing

from server.config import Config, ConfigError
from server.config_file import load_config
from server.http.fair_limiter import FairLimiter, QueueFull
from server.http.login_guard import client_key, resolve_client
from server.http.login_throttle import LoginThrottle, Refusal

MINUTE = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _throttle(clock: FakeClock, **overrides: float) -> LoginThrottle:
    settings: dict[str, float] = {
        "address_limit": 3,
        "address_window": 5 * MINUTE,
        "address_backoff": 1.0,
        "account_limit": 2,
        "account_window": 15 * MINUTE,
    }
    settings.update(overrides)
    return LoginThrottle(
        address_limit=int(settings["address_limit"]),
        address_window=settings["address_window"],
        address_backoff=settings["address_backoff"],
        account_limit=int(settings["account_limit"]),
        account_window=settings["account_window"],
        clock=clock,
    )


def _fail(throttle: LoginThrottle, address: str, account: str | None, times: int = 1) -> None:
    for _ in range(times):
        assert throttle.refusal(address, account) is None
        throttle.failed(address, account)


# The throttle ---------------------------------------------------------------------------------


def test_an_address_is_blocked_from_its_limit_th_failure_with_doubling_delays() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, account_limit=0)
    _fail(throttle, "a", "x", times=2)
    assert throttle.refusal("a", "x") is None  # two failures: still free
    throttle.failed("a", "x")  # the third reaches the limit: 1 s
    assert throttle.refusal("a", "x") == Refusal("address", 1.0)
    assert throttle.refusal("a", None) == Refusal("address", 1.0)  # whatever it asks for
    assert throttle.refusal("b", "x") is None  # another address is not concerned
    for delay in (2.0, 4.0, 8.0):
        clock.now += throttle.refusal("a", "x").retry_after  # type: ignore[union-attr]
        _fail(throttle, "a", "x")
        assert throttle.refusal("a", "x") == Refusal("address", delay)


def test_an_address_delay_is_capped_at_its_window() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, account_limit=0, address_backoff=100.0)
    _fail(throttle, "a", None, times=3)
    for _ in range(3):  # 100 s, 200 s, then 300 s (the window) rather than 400 s
        refusal = throttle.refusal("a", None)
        assert refusal is not None
        clock.now += refusal.retry_after
        _fail(throttle, "a", None)
    assert throttle.refusal("a", None) == Refusal("address", 5 * MINUTE)


def test_an_address_is_forgotten_a_window_after_its_last_failure_or_block() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, account_limit=0)
    _fail(throttle, "a", None, times=2)
    clock.now += 5 * MINUTE - 1
    _fail(throttle, "a", None)  # within the window of the last one: the third failure
    assert throttle.refusal("a", None) == Refusal("address", 1.0)
    clock.now += 1.0 + 5 * MINUTE  # the block ended, then a whole quiet window
    _fail(throttle, "a", None, times=2)  # counted from zero again
    assert throttle.refusal("a", None) is None


def test_an_account_over_its_limit_refuses_only_addresses_that_have_failed() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, address_limit=100)
    _fail(throttle, "a", "alice")
    _fail(throttle, "b", "alice")  # the account's second failure: at its limit
    refused = throttle.refusal("a", "alice")
    assert refused is not None and refused.limit == "account"
    assert throttle.refusal("b", "alice") is not None
    assert throttle.refusal("a", "bob") is None  # other accounts are not concerned
    assert throttle.refusal("c", "alice") is None  # a clean address: the real user gets in
    throttle.failed("c", "alice")  # ... but once it has failed, it waits like the others
    assert throttle.refusal("c", "alice") is not None


def test_an_account_refusal_lasts_until_either_record_is_forgotten() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, address_limit=100, account_window=15 * MINUTE)
    _fail(throttle, "a", "alice", times=2)
    # The address's own record goes first (5 min after its last failure): then it is clean.
    assert throttle.refusal("a", "alice") == Refusal("account", 5 * MINUTE)
    clock.now += 5 * MINUTE
    assert throttle.refusal("a", "alice") is None
    # A short account window ends the refusal earlier, for every address.
    short = _throttle(clock, address_limit=100, account_window=2 * MINUTE)
    _fail(short, "a", "alice", times=2)
    assert short.refusal("a", "alice") == Refusal("account", 2 * MINUTE)
    clock.now += 2 * MINUTE
    assert short.refusal("a", "alice") is None


def test_a_success_clears_the_account_but_not_the_address() -> None:
    clock = FakeClock()
    throttle = _throttle(clock)
    _fail(throttle, "a", "alice", times=2)
    assert throttle.refusal("a", "alice") is not None  # the account is at its limit
    throttle.succeeded("alice")
    assert throttle.refusal("a", "alice") is None
    # Logging in to one's own account must not reset a guesser's count.
    throttle.failed("a", "mallory")  # the address's third failure
    assert throttle.refusal("a", "alice") == Refusal("address", 1.0)


def test_a_limit_of_zero_disables_it() -> None:
    clock = FakeClock()
    throttle = _throttle(clock, address_limit=0, account_limit=0)
    _fail(throttle, "a", "alice", times=50)
    assert throttle.refusal("a", "alice") is None


def test_the_tables_are_bounded() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(
        address_limit=1,
        address_window=MINUTE,
        address_backoff=1.0,
        account_limit=1,
        account_window=MINUTE,
        clock=clock,
        max_entries=10,
    )
    for i in range(100):
        throttle.failed(f"10.0.0.{i}", f"user{i}")
    assert throttle.tracked() == (10, 10)
    assert throttle.refusal("10.0.0.99", None) is not None  # the newest are kept


# The fair limiter -----------------------------------------------------------------------------


async def test_a_freed_slot_goes_to_the_next_key_in_turn() -> None:
    limiter = FairLimiter(slots=1, max_waiting_per_key=10)
    order: list[str] = []
    release = trio.Event()

    async def use(key: str, label: str) -> None:
        async with limiter.slot(key):
            order.append(label)
            if label == "a0":
                await release.wait()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for key, label in [("a", "a0"), ("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b0")]:
                nursery.start_soon(use, key, label)
                await trio.testing.wait_all_tasks_blocked()  # queued in this order
            release.set()
    # A plain FIFO would serve b0 last, behind all of a's requests.
    assert order == ["a0", "a1", "b0", "a2", "a3"]


async def test_a_key_with_a_full_queue_is_refused_at_once() -> None:
    limiter = FairLimiter(slots=1, max_waiting_per_key=2)
    release = trio.Event()

    async def hold(key: str) -> None:
        async with limiter.slot(key):
            await release.wait()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # one holds the slot, two wait
                nursery.start_soon(hold, "a")
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(QueueFull):
                async with limiter.slot("a"):
                    pass
            nursery.start_soon(hold, "b")  # another key still queues
            await trio.testing.wait_all_tasks_blocked()
            assert limiter.waiting() == 3
            release.set()
    assert limiter.waiting() == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_a_slot_is_never_lost() -> None:
    limiter = FairLimiter(slots=1, max_waiting_per_key=10)
    release = trio.Event()
    served: list[str] = []

    async def use(key: str, hold: bool = False) -> None:
        async with limiter.slot(key):
            served.append(key)
            if hold:
                await release.wait()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(use, "holder", True)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as gave_up:
                nursery.start_soon(use, "other")
                await trio.testing.wait_all_tasks_blocked()
                gave_up.cancel()
                async with limiter.slot("quitter"):  # cancelled while it waits
                    pytest.fail("a cancelled waiter got a slot")
            assert limiter.waiting() == 1  # only "other" is left
            release.set()
    assert served == ["holder", "other"]
    async with limiter.slot("again"):  # the slot came back
        pass


async def test_a_slot_granted_to_a_waiter_cancelled_meanwhile_is_passed_on() -> None:
    limiter = FairLimiter(slots=1, max_waiting_per_key=10)
    served: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def doomed() -> None:
                with scope:
                    async with limiter.slot("doomed"):
                        served.append("doomed")

            async def after() -> None:
                async with limiter.slot("after"):
                    served.append("after")

            await limiter.acquire("holder")
            nursery.start_soon(doomed)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(after)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # "doomed" is woken with Cancelled, but has not run yet ...
            limiter.release()  # ... so the slot goes to it, and it must pass it on
    assert served == ["after"]
    assert limiter.waiting() == 0


# Client addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # one host's /64 is one client
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not an address", "not an address"),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


_PROXY = (ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", [], "127.0.0.1"),  # no header: the proxy itself
        ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        # The client may send its own header: only the entry our proxy appended counts.
        ("127.0.0.1", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
        ("127.0.0.1", ["6.6.6.6", "10.1.2.3, 198.51.100.7"], "198.51.100.7"),
        ("127.0.0.1", ["198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # through two proxies
        ("127.0.0.1", ["garbage, 10.1.2.3"], "10.1.2.3"),  # the last hop that could be read
        ("192.0.2.9", ["198.51.100.7"], "192.0.2.9"),  # not a trusted proxy: header ignored
        (None, ["198.51.100.7"], "unknown"),
    ],
)
def test_resolve_client(peer: str | None, forwarded: list[str], client: str) -> None:
    assert resolve_client(peer, forwarded, _PROXY) == client


# Settings -------------------------------------------------------------------------------------


def test_throttle_settings_load_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "hibiki.toml"
    path.write_text(
        "[accounts]\nlogin_address_limit = 5\nlogin_account_window = 60\n"
        '[server]\ntrusted_proxies = ["::1"]\n'
    )
    env = {"HIBIKI_LOGIN_ACCOUNT_LIMIT": "0", "HIBIKI_LOGIN_ADDRESS_BACKOFF": "0.5"}
    config = load_config(str(path), env).config
    assert config.accounts.login_address_limit == 5
    assert config.accounts.login_account_window == 60.0
    assert config.accounts.login_account_limit == 0
    assert config.accounts.login_address_backoff == 0.5
    assert config.server.trusted_proxies == ("::1",)
    defaults = Config().accounts
    assert (defaults.login_address_limit, defaults.login_address_window) == (20, 300.0)
    assert (defaults.login_account_limit, defaults.login_account_window) == (10, 900.0)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("login_address_limit", -1, "must not be negative"),
        ("login_account_limit", -1, "must not be negative"),
        ("login_address_window", 0.0, "must be positive"),
        ("login_account_window", -5.0, "must be positive"),
        ("login_address_backoff", 0.0, "must be positive"),
        ("trusted_proxies", ("127.0.0.1", "proxy.local"), "'proxy.local' is not an IP address"),
    ],
)
def test_bad_throttle_settings_are_refused(key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_flat(**{key: value})
    assert refused.value.problems[0][0] == key
    assert problem in refused.value.problems[0][1]

"""The web client in a real browser: Debian's chromium driven by Playwright (sync API).

The server runs on its own trio loop in a thread (Playwright's sync API cannot run inside trio),
with a TCP relay in front of it so a test can break one browser's connection as a network or
the server would. Without /usr/bin/chromium or the playwright package these tests skip, saying
why; with CI=true they fail instead.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from server.http.web_client import content_security_policy

from ..conftest import STEP, RunningServer, make_config, running_server
from .test_client import PASSWORD, TcpProxy, proxy_to

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "server" / "http" / "static"
ARTIFACTS = ROOT / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"
# Records every Content-Security-Policy violation on the page (Playwright injects this itself).
CSP_WATCH = """document.addEventListener("securitypolicyviolation",
    (e) => (window.__cspViolations = window.__cspViolations || []).push(e.violatedDirective));"""


class ServerThread:
    """A hibiki server and a `TcpProxy` in front of it, on their own trio loop in a thread."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self._config = make_config(tmp_path, **config)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hibiki-server", daemon=True)
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.server: RunningServer | None = None
        self.proxy: TcpProxy | None = None

    @property
    def db_path(self) -> str:
        return self._config.storage.db_path

    @property
    def direct(self) -> str:
        assert self.server is not None
        return self.server.http

    @property
    def proxied(self) -> str:
        assert self.proxy is not None
        return f"http://127.0.0.1:{self.proxy.port}"

    def call(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the server's trio thread (e.g. `proxy.close`)."""
        return trio.from_thread.run_sync(function, trio_token=self._token)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(STEP * 3) or self._error is not None:
            raise RuntimeError("the server thread did not start") from self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.call(self._stop.set)
        self._thread.join(STEP * 3)
        assert not self._thread.is_alive(), "the server thread did not stop"
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with running_server(self._config) as server, proxy_to(server.port) as proxy:
            self.server, self.proxy = server, proxy
            self._ready.set()
            await self._stop.wait()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(tmp_path) as running:
        yield running


def open_page(browser: Browser, url: str) -> Page:
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    page.goto(url + "/")
    return page


def register_in(page: Page, name: str) -> None:
    from playwright.sync_api import expect

    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.click("#register-button")
    expect(page.locator("#me")).to_have_text(name)
    expect(page.locator("#status")).to_have_attribute("data-state", "online")


def say(page: Page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def test_two_browsers_chat_and_a_dropped_one_gets_exactly_what_it_missed(
    browser: Browser, live: ServerThread
) -> None:
    from playwright.sync_api import expect

    alice, bob = open_page(browser, live.direct), open_page(browser, live.proxied)
    dialogs: list[str] = []
    urls: list[str] = []
    script_errors: list[str] = []
    for page in (alice, bob):
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("request", lambda request: urls.append(request.url))
        page.on("pageerror", lambda error: script_errors.append(str(error)))
    alice_texts = alice.locator("#message-list .msg .text")
    bob_texts = bob.locator("#message-list .msg .text")

    register_in(alice, "alice")
    alice.fill("#new-room-name", "lobby")
    alice.click("#create-room-form button")
    expect(alice.locator("#room-title")).to_have_text("lobby")
    register_in(bob, "bob")
    bob.click("#room-list li[data-room='lobby'] button.join")
    expect(bob.locator("#room-title")).to_have_text("lobby")
    expect(alice.locator("#presence-list")).to_contain_text("bob")  # presence: bob came online

    say(alice, "hello bob")
    expect(bob_texts).to_have_text(["hello bob"])
    bob.fill("#composer-input", "hi alice")  # typing...
    expect(alice.locator("#typing")).to_have_text("bob is typing…")
    bob.press("#composer-input", "Enter")
    expect(alice_texts).to_have_text(["hello bob", "hi alice"])
    expect(alice.locator("#typing")).to_have_text("")

    # Bob's network goes away and the server side of his connection is closed.
    bob.context.set_offline(True)
    live.call(live.proxy.close)  # type: ignore[union-attr]
    expect(bob.locator("#status")).to_have_attribute("data-state", "offline")
    say(bob, "sent while offline")
    expect(bob.locator("#pending-list .text")).to_have_text(["sent while offline"])
    for i in (1, 2, 3):
        say(alice, f"missed {i}")
        expect(alice.locator("#pending-list li")).to_have_count(0)  # stored and acked
    expect(bob_texts).to_have_text(["hello bob", "hi alice"])

    live.call(live.proxy.reopen)  # type: ignore[union-attr]
    bob.context.set_offline(False)
    everything = ["hello bob", "hi alice", "missed 1", "missed 2", "missed 3", "sent while offline"]
    expect(bob.locator("#status")).to_have_attribute("data-state", "online")
    expect(bob_texts).to_have_text(everything)  # in order, none lost, none twice
    expect(bob.locator("#pending-list li")).to_have_count(0)
    expect(alice_texts).to_have_text(everything)  # the re-sent message arrived once
    history = httpx.get(
        live.direct + "/api/rooms/lobby/messages",
        headers={"Authorization": "Bearer " + bob.evaluate("sessionStorage['hibiki.token']")},
    ).json()
    assert [(m["seq"], m["text"]) for m in history["messages"]] == list(enumerate(everything, 1))

    # Text is text: markup in a message is shown literally, never run.
    say(alice, XSS)
    expect(bob_texts.last).to_have_text(XSS)
    expect(bob.locator("#message-list img")).to_have_count(0)

    # Errors are shown as sentences (their code kept aside); a refused message is given back.
    say(bob, "x" * 4001)
    expect(bob.locator("#error-bar")).to_be_visible()
    expect(bob.locator("#error-bar")).to_have_attribute("data-code", "text_too_long")
    expect(bob.locator("#error-text")).to_contain_text("too long")
    expect(bob.locator("#composer-input")).to_have_value("x" * 4001)
    bob.fill("#composer-input", "")

    # Unread counts: a message in a room bob is not looking at.
    alice.fill("#new-room-name", "random")
    alice.click("#create-room-form button")
    expect(alice.locator("#room-title")).to_have_text("random")
    bob.click("#refresh-rooms")
    bob.click("#room-list li[data-room='random'] button.join")
    expect(bob.locator("#room-title")).to_have_text("random")
    bob.click("#room-list li[data-room='lobby'] button.room-name")
    say(alice, "over here")
    expect(bob.locator("#room-list li[data-room='random'] .unread")).to_have_text("1")
    bob.click("#room-list li[data-room='random'] button.room-name")
    expect(bob.locator("#room-list li[data-room='random'] .unread")).to_be_hidden()
    expect(bob_texts).to_have_text(["over here"])
    bob.click("#room-list li[data-room='lobby'] button.room-name")
    expect(bob_texts.last).to_have_text(XSS)

    ARTIFACTS.mkdir(exist_ok=True)
    bob.screenshot(path=str(ARTIFACTS / "web-client.png"))
    token = bob.evaluate("sessionStorage['hibiki.token']")
    assert token and not [url for url in urls if token in url]  # never in a URL
    assert dialogs == [] and script_errors == []
    for page in (alice, bob):
        assert page.evaluate("window.__cspViolations || []") == []
        page.context.close()


def test_history_loads_older_pages_on_scroll(browser: Browser, live: ServerThread) -> None:
    from playwright.sync_api import expect

    with httpx.Client(base_url=live.direct, timeout=STEP) as http:
        session = http.post("/api/register", json={"name": "carol", "password": PASSWORD})
        auth = {"Authorization": "Bearer " + session.json()["token"]}
        assert http.post("/api/rooms", json={"name": "archive"}, headers=auth).status_code == 201
        batch = {"messages": [{"text": f"m{i}"} for i in range(1, 121)]}
        response = http.post("/api/rooms/archive/messages:batch", json=batch, headers=auth)
        assert response.status_code == 201, response.text
    page = open_page(browser, live.direct)
    page.fill("#login-name", "carol")
    page.fill("#login-password", PASSWORD)
    page.click("#login-button")
    texts = page.locator("#message-list .msg .text")
    expect(texts).to_have_count(50)  # the latest page
    expect(texts.first).to_have_text("m71")
    expect(texts.last).to_have_text("m120")
    for count in (100, 120):
        page.locator("#messages").evaluate("box => { box.scrollTop = 0; }")
        expect(texts).to_have_count(count)
    expect(texts.first).to_have_text("m1")
    expect(page.locator("#history-status")).to_have_text("start of the room")
    assert texts.all_text_contents() == [f"m{i}" for i in range(1, 121)]
    page.context.close()


def test_refusals_are_shown_as_sentences(browser: Browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with ServerThread(tmp_path, rate_burst=3, rate_per_second=0.001) as live:
        page = open_page(browser, live.direct)
        register_in(page, "dave")
        page.fill("#new-room-name", "lobby")
        page.click("#create-room-form button")
        expect(page.locator("#room-title")).to_have_text("lobby")
        for i in range(5):  # a burst of 3 is allowed, then rate_limited
            say(page, f"burst {i}")
        failed = page.locator("#pending-list li.failed")
        expect(failed.first).to_have_attribute("data-code", "rate_limited")  # kept, to retry
        expect(failed.first).to_contain_text("click to retry")
        expect(page.locator("#error-bar")).to_have_attribute("data-code", "rate_limited")
        expect(page.locator("#error-text")).to_contain_text("sending too fast")
        # Every message ends stored or refused (typing notices spend the same budget).
        expect(page.locator("#pending-list li:not(.failed)")).to_have_count(0)
        stored = page.locator("#message-list .msg").count()
        assert 1 <= stored <= 3 and stored + failed.count() == 5

        # Removed from the room elsewhere (another device, over HTTP) while offline, with a
        # message typed and not yet sent: on reconnect its re-send is refused, and shown.
        token = page.evaluate("sessionStorage['hibiki.token']")
        auth = {"Authorization": f"Bearer {token}"}
        # The owner leaves only after a transfer (issue #15): dave hands lobby to erin first.
        erin = httpx.post(
            live.direct + "/api/register", json={"name": "erin", "password": "correct horse"}
        ).json()["token"]
        httpx.post(
            live.direct + "/api/rooms/lobby/join", headers={"Authorization": f"Bearer {erin}"}
        )
        response = httpx.post(
            live.direct + "/api/rooms/lobby/transfer", json={"user": "erin"}, headers=auth
        )
        assert response.status_code == 200, response.text
        page.context.set_offline(True)
        expect(page.locator("#status")).to_have_attribute("data-state", "offline")
        say(page, "still here?")
        response = httpx.post(live.direct + "/api/rooms/lobby/leave", headers=auth)
        assert response.status_code == 200
        page.context.set_offline(False)
        expect(page.locator("#error-bar")).to_have_attribute("data-code", "not_member")
        expect(page.locator("#error-text")).to_contain_text("not a member")
        expect(page.locator("#pending-list li")).to_have_count(failed.count())  # not retried

        # Online, the page follows a leave and a join made elsewhere as they happen.
        lobby = page.locator("#room-list li[data-room=lobby] button.room-name")
        expect(lobby).to_be_disabled()  # not a member: only its Join button works
        response = httpx.post(live.direct + "/api/rooms/lobby/join", headers=auth)
        assert response.status_code == 200
        expect(lobby).to_be_enabled()
        response = httpx.post(live.direct + "/api/rooms/lobby/leave", headers=auth)
        assert response.status_code == 200
        expect(lobby).to_be_disabled()
        page.context.close()


async def test_web_client_is_served_with_strict_security_headers(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    page = await http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    host = f"127.0.0.1:{server.port}"
    csp = page.headers["content-security-policy"]
    assert csp == content_security_policy(host)
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert f"connect-src 'self' ws://{host} wss://{host}" in csp
    assert "'unsafe-inline'" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    html = page.text
    assert '<script type="module" src="/static/js/main.js"></script>' in html
    assert html.count("<script") == 1 and not re.search(r"\son[a-z]+=", html)  # no inline JS
    modules = sorted(path.name for path in (STATIC / "js").glob("*.js"))
    assert "main.js" in modules
    for name in modules:
        script = await http.get(f"/static/js/{name}")
        assert script.status_code == 200, name
        assert script.headers["content-type"].startswith("text/javascript")
        assert "content-security-policy" in script.headers
        assert "innerHTML" not in script.text and "token=" not in script.text, name
        assert "eval(" not in script.text and "new Function" not in script.text, name
    for missing in ("/static/nope.js", "/static/../web_client.py", "/static/%2e%2e/cli.py"):
        response = await http.get(missing)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_policy_names_only_a_well_formed_host() -> None:
    assert "ws://chat.example:8080 wss://chat.example:8080" in content_security_policy(
        "chat.example:8080"
    )
    for hostile in ("evil.example; script-src *", "a b", "", None):
        assert content_security_policy(hostile).count("connect-src 'self';") == 1

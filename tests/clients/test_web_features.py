"""The web client's features of issue #15 in Chromium, at a desktop and a phone size.

Edit and delete from a message's menu, unread badges from the server's read state, the account
page (sessions, display name, password). One server per module (each test has its own users and
rooms); screenshots go to `test-artifacts/web-client/<feature>-<size>.png`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ..conftest import STEP
from .test_client import PASSWORD
from .test_web_client import (
    CSP_WATCH,
    STATIC,
    ServerThread,
    say,
)
from .test_web_client_defects import SHOTS, SIZES

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(params=sorted(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("web-features")) as running:
        yield running


class Account:
    """A user driven over HTTP: the other side of a conversation, or a second session."""

    def __init__(self, live: ServerThread, name: str, *, register: bool = True) -> None:
        self.live, self.name = live, name
        path = "/api/register" if register else "/api/login"
        body = {"name": name, "password": PASSWORD, "device": f"{name}'s script"}
        response = httpx.post(live.direct + path, json=body, timeout=STEP)
        assert response.is_success, response.text
        self.token = response.json()["token"]

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": "Bearer " + self.token}
        return httpx.request(
            method, self.live.direct + path, json=body, headers=headers, timeout=STEP
        )

    def post(self, room: str, *texts: str) -> list[int]:
        batch = {"messages": [{"text": text} for text in texts]}
        response = self.call("POST", f"/api/rooms/{room}/messages:batch", batch)
        assert response.status_code == 201, response.text
        return [result["id"] for result in response.json()["results"]]


def open_at(browser: Browser, live: ServerThread, size: str, *, proxied: bool = False) -> Page:
    phone = size == "phone"
    context = browser.new_context(
        viewport=SIZES[size],  # type: ignore[arg-type]
        has_touch=phone,
        is_mobile=phone,
    )
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if _script_error(m) else None)
    page.on(
        "response",
        lambda r: errors.append(f"{r.status} {httpx.URL(r.url).path}") if r.status >= 400 else None,
    )
    page.errors = errors  # type: ignore[attr-defined]
    page.goto((live.proxied if proxied else live.direct) + "/")
    return page


def _script_error(message: Any) -> bool:
    """A console error of the page's own, not the browser's line about a failed request (the
    responses are checked apart; an offline socket's failure is expected)."""
    text = str(message.text)
    network = text.startswith(("Failed to load resource", "WebSocket connection to"))
    return message.type == "error" and not network


def log_in(page: Page, name: str) -> None:
    from playwright.sync_api import expect

    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.press("#login-password", "Enter")
    expect(page.locator("#me")).to_have_text(name)
    expect(page.locator("#status")).to_have_attribute("data-state", "online")


def finish(page: Page, *refused: str) -> None:
    """No script error, no failed request but the `refused` ones ("401 /api/password"), no CSP
    violation on `page`; then close it."""
    assert page.errors == list(refused)  # type: ignore[attr-defined]
    assert page.evaluate("window.__cspViolations || []") == []
    page.context.close()


def shot(page: Page, feature: str, size: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{feature}-{size}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")


def room_of(owner: Account, name: str, *members: Account) -> str:
    assert owner.call("POST", "/api/rooms", {"name": name}).status_code == 201
    for member in members:
        assert member.call("POST", f"/api/rooms/{name}/join").status_code == 200
    return name


def message(page: Page, text: str) -> Any:
    return page.locator("#message-list .msg", has=page.locator(".text", has_text=text))


def test_every_module_loads_with_no_error_and_is_revalidated_by_etag(
    browser: Browser,
    live: ServerThread,
) -> None:
    from playwright.sync_api import expect

    page = open_at(browser, live, "desktop")
    Account(live, "loader")
    log_in(page, "loader")
    expect(page.locator("#account-button")).to_be_visible()  # the toolbar is wired
    fetched = page.evaluate(
        "performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
    )
    modules = {f"/static/js/{path.name}" for path in (STATIC / "js").glob("*.js")}
    assert modules <= set(fetched), modules - set(fetched)  # each is imported, none is dead
    finish(page)

    first = httpx.get(live.direct + "/static/js/main.js")
    assert first.headers["cache-control"] == "no-cache"
    tag = first.headers["etag"]
    again = httpx.get(live.direct + "/static/js/main.js", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    other = httpx.get(live.direct + "/static/js/rooms.js", headers={"If-None-Match": tag})
    assert other.status_code == 200 and other.headers["etag"] != tag


def test_hidden_files_and_unknown_types_are_not_served(tmp_path: Path) -> None:
    from server.http.web_client import load_static_files

    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "a.js").write_text("export {};")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "b.js").write_text("secret")
    (tmp_path / "notes.txt").write_text("not servable")
    assert set(load_static_files(tmp_path)) == {"js/a.js"}


def test_edit_and_delete_from_a_messages_menu(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    me, other = Account(live, f"ed-{size}"), Account(live, f"ed-bob-{size}")
    assert other.call("PATCH", "/api/me", {"display_name": "Bob B."}).is_success
    room = room_of(other, f"edits-{size}", me)  # a plain member: no menu on others' messages
    (theirs,) = other.post(room, "bob was here")
    page = open_at(browser, live, size)
    log_in(page, me.name)
    expect(message(page, "bob was here").locator(".user")).to_have_text("Bob B.")  # display name
    expect(message(page, "bob was here").locator(".msg-actions")).to_have_count(0)  # not mine
    say(page, "helo wrold")
    mine = message(page, "helo wrold")
    menu = mine.locator("[role=menu]")

    if size == "phone":
        mine.locator(".text").tap()  # no hover on a phone: a tap opens the menu
    else:
        mine.locator(".msg-actions").focus()
        page.keyboard.press("Enter")
    expect(menu).to_be_visible()
    expect(menu.get_by_role("menuitem", name="Edit")).to_be_focused()
    shot(page, "edit-menu", size)
    page.keyboard.press("Escape")  # closes it, focus back on its button
    expect(menu).to_have_count(0)
    expect(mine.locator(".msg-actions")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")  # on "Edit"
    editor = page.locator(".msg .edit-input")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("helo wrold")
    page.keyboard.press("Escape")  # cancels: nothing changed
    expect(editor).to_have_count(0)
    expect(page.locator(".msg", has_text="helo wrold").locator(".edited")).to_have_count(0)

    page.locator(".msg", has_text="helo wrold").locator(".msg-actions").click()
    page.get_by_role("menuitem", name="Edit").click()
    editor.fill("hello")
    editor.press("Shift+Enter")  # a new line, not a save
    editor.type("world")
    expect(editor).to_have_value("hello\nworld")
    shot(page, "edit-in-place", size)
    editor.press("Enter")
    edited = page.locator("#message-list .msg", has_text="hello")
    expect(editor).to_have_count(0)
    assert edited.locator(".text").inner_text() == "hello\nworld"
    expect(edited.locator(".edited")).to_have_text("(edited)")
    history = me.call("GET", f"/api/rooms/{room}/messages").json()["messages"]
    assert [m["text"] for m in history] == ["bob was here", "hello\nworld"]

    # Another user's edit and delete arrive live.
    assert other.call("PATCH", f"/api/rooms/{room}/messages/{theirs}", {"text": "bob WAS here"})
    theirs_shown = page.locator(f"#message-list .msg[data-id='{theirs}']")
    expect(theirs_shown.locator(".text")).to_have_text("bob WAS here")
    expect(theirs_shown.locator(".edited")).to_be_visible()
    assert other.call("DELETE", f"/api/rooms/{room}/messages/{theirs}").is_success
    expect(theirs_shown).to_have_class(re.compile(r"\bdeleted\b"))
    expect(theirs_shown.locator(".text")).to_have_text("This message was deleted.")

    # Delete one's own: asked first (Escape keeps it), then a tombstone.
    edited.locator(".msg-actions").click()
    page.get_by_role("menuitem", name="Delete").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-ok")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(edited.locator(".text")).to_have_text("hello\nworld")
    edited.locator(".msg-actions").click()
    page.get_by_role("menuitem", name="Delete").click()
    shot(page, "delete-confirm", size)
    page.keyboard.press("Enter")  # on "Delete"
    tombstone = page.locator("#message-list .msg.deleted")
    expect(tombstone).to_have_count(2)
    expect(tombstone.locator(".msg-actions")).to_have_count(0)  # nothing left to change
    expect(page.locator("#message-list .text")).to_have_text(["This message was deleted."] * 2)
    shot(page, "tombstones", size)
    history = me.call("GET", f"/api/rooms/{room}/messages").json()["messages"]
    assert [m.get("deleted") for m in history] == [True, True]
    finish(page)


def test_an_editor_whose_edit_is_refused_stays_open_with_the_reason(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    me = Account(live, f"refused-{size}")
    room = room_of(me, f"refused-{size}")
    me.post(room, "first draft")
    page = open_at(browser, live, size)
    log_in(page, me.name)
    shown = message(page, "first draft")
    shown.locator(".msg-actions").click()
    page.get_by_role("menuitem", name="Edit").click()
    editor = page.locator(".msg .edit-input")
    editor.fill("x" * 4001)
    editor.press("Enter")
    expect(page.locator("#error-bar")).to_have_attribute("data-code", "text_too_long")
    expect(editor).to_be_enabled()
    expect(editor).to_have_value("x" * 4001)  # kept, to shorten
    editor.fill("second draft")
    editor.press("Enter")
    expect(page.locator("#message-list .msg .text")).to_have_text(["second draft"])
    finish(page)


def test_edits_and_deletes_made_while_offline_show_after_the_resume(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    me, other = Account(live, f"away-{size}"), Account(live, f"away-bob-{size}")
    room = room_of(other, f"away-{size}", me)
    first, second = other.post(room, "typo heer", "regrettable")
    (own,) = me.post(room, "mine, to fix offline")
    page = open_at(browser, live, size, proxied=True)
    log_in(page, me.name)
    texts = page.locator("#message-list .msg .text")
    expect(texts).to_have_text(["typo heer", "regrettable", "mine, to fix offline"])

    page.context.set_offline(True)
    live.call(live.proxy.close)  # type: ignore[union-attr]
    expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    # An edit made here while offline waits ("saving…"), and is sent once connected again.
    message(page, "mine, to fix offline").locator(".msg-actions").click()
    page.get_by_role("menuitem", name="Edit").click()
    editor = page.locator(".msg .edit-input")
    editor.fill("mine, fixed offline")
    editor.press("Enter")
    expect(editor).to_be_disabled()
    expect(page.locator(".msg.editing .edit-hint")).to_contain_text("saving…")
    assert other.call("PATCH", f"/api/rooms/{room}/messages/{first}", {"text": "typo here"})
    assert other.call("DELETE", f"/api/rooms/{room}/messages/{second}").is_success
    other.post(room, "after")
    live.call(live.proxy.reopen)  # type: ignore[union-attr]
    page.context.set_offline(False)
    expect(page.locator("#status")).to_have_attribute("data-state", "online")
    expect(texts).to_have_text(
        ["typo here", "This message was deleted.", "mine, fixed offline", "after"]
    )
    expect(editor).to_have_count(0)
    expect(message(page, "typo here").locator(".edited")).to_be_visible()
    shot(page, "resumed-edits", size)
    history = me.call("GET", f"/api/rooms/{room}/messages").json()["messages"]
    assert [m["text"] for m in history if m["id"] == own] == ["mine, fixed offline"]
    finish(page)


def test_unread_badges_follow_the_servers_read_state_across_two_pages(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    me, other = Account(live, f"ur-{size}"), Account(live, f"ur-bob-{size}")
    quiet, busy = room_of(other, f"a-quiet-{size}", me), room_of(other, f"b-busy-{size}", me)
    other.post(busy, "one", "two", "three")  # before either page: the welcome's count
    here, there = open_at(browser, live, size), open_at(browser, live, size)
    for page in (here, there):
        log_in(page, me.name)
        expect(page.locator("#room-title")).to_have_text(quiet)  # the first room is open
    badge_here = here.locator(f"#room-list li[data-room='{busy}'] .unread")
    badge_there = there.locator(f"#room-list li[data-room='{busy}'] .unread")
    expect(badge_here).to_have_text("3")
    expect(badge_there).to_have_text("3")
    if size == "phone":
        here.click("#rooms-toggle")
    busy_button = here.locator(f"#room-list li[data-room='{busy}'] button.room-name")
    busy_button.focus()
    other.post(busy, "four")
    expect(badge_here).to_have_text("4")  # counted here, from the live message
    expect(badge_here).to_be_visible()
    expect(busy_button).to_be_focused()  # the list is redrawn, the keyboard user stays put
    shot(here, "unread-badges", size)

    # The other page opens the room and sees its newest message: this one's badge goes too.
    if size == "phone":
        there.click("#rooms-toggle")
    there.click(f"#room-list li[data-room='{busy}'] button.room-name")
    expect(there.locator("#message-list .msg .text")).to_have_text(["one", "two", "three", "four"])
    expect(badge_here).to_have_attribute("hidden", "")
    expect(badge_here).to_have_text("0")
    rooms = {r["name"]: r for r in me.call("GET", "/api/rooms").json()["rooms"]}
    assert rooms[busy]["unread"] == 0 and rooms[busy]["read_seq"] == 4

    # A tab out of sight reads nothing: the cursor waits until it is shown again.
    there.evaluate(
        "() => { Object.defineProperty(document, 'visibilityState', "
        "{configurable: true, get: () => 'hidden'});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    other.post(busy, "five")
    expect(there.locator("#message-list .msg .text").last).to_have_text("five")
    expect(badge_here).to_have_text("1")
    expect(there.locator(f"#room-list li[data-room='{busy}'] .unread")).to_have_text("1")
    rooms = {r["name"]: r for r in me.call("GET", "/api/rooms").json()["rooms"]}
    assert rooms[busy]["unread"] == 1
    there.evaluate(
        "() => { delete document.visibilityState;"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    expect(badge_here).to_have_attribute("hidden", "")
    rooms = {r["name"]: r for r in me.call("GET", "/api/rooms").json()["rooms"]}
    assert rooms[busy]["unread"] == 0 and rooms[busy]["read_seq"] == 5
    for page in (here, there):
        finish(page)

"""The web client's defects of issue #15, each in Chromium at a desktop and a phone size.

Screenshots go to `test-artifacts/web-client/` (ignored by git; each test prints its paths):
`<test>-desktop.png` at 1280x800 and `<test>-phone.png` at 390x844.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from protocol import ErrorCode

from ..conftest import STEP
from .test_client import PASSWORD
from .test_web_client import (
    ARTIFACTS,
    CSP_WATCH,
    XSS,
    ServerThread,
    register_in,
    say,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SHOTS = ARTIFACTS / "web-client"
ERRORS_JS = Path(__file__).resolve().parents[2] / "server" / "http" / "static" / "js" / "errors.js"


@pytest.fixture(params=sorted(SIZES))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(tmp_path) as running:
        yield running


def page_at(browser: Browser, live: ServerThread, size: str) -> Page:
    context = browser.new_context(viewport=SIZES[size])  # type: ignore[arg-type]
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    page.goto(live.direct + "/")
    return page


def shot(page: Page, name: str, size: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{size}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")


def box(page: Page, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not rendered"
    return dict(found)


def inside_viewport(page: Page, selector: str) -> bool:
    viewport, b = page.viewport_size, box(page, selector)
    assert viewport is not None
    return (
        b["x"] >= 0
        and b["y"] >= 0
        and b["x"] + b["width"] <= viewport["width"]
        and b["y"] + b["height"] <= viewport["height"]
    )


def intersects(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def create_room_in(page: Page, room: str, size: str) -> None:
    """Create `room` from the sidebar (the drawer, on a phone) and land in it."""
    from playwright.sync_api import expect

    if size == "phone":
        page.click("#rooms-toggle")
    page.fill("#new-room-name", room)
    page.press("#new-room-name", "Enter")
    expect(page.locator("#room-title")).to_have_text(room)


def api_user(live: ServerThread, name: str) -> dict[str, str]:
    session = httpx.post(
        live.direct + "/api/register", json={"name": name, "password": PASSWORD}
    ).json()
    return {"Authorization": "Bearer " + session["token"]}


def log_in(page: Page, name: str) -> None:
    from playwright.sync_api import expect

    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.press("#login-password", "Enter")
    expect(page.locator("#status")).to_have_attribute("data-state", "online")


def test_a_phone_gets_full_width_messages_a_visible_composer_and_a_rooms_drawer(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    page = page_at(browser, live, size)
    register_in(page, "erin")
    create_room_in(page, "lobby", size)
    say(page, "a message long enough to wrap over a few lines on a phone held upright " * 2)
    expect(page.locator("#message-list .msg")).to_have_count(1)
    shot(page, "layout", size)
    assert box(page, "#message-list .msg .bubble")["width"] > 250
    for part in ("#composer-input", "#send-button", "#room-title"):
        assert inside_viewport(page, part), part
    sidebar = page.locator("#sidebar")
    if size == "phone":
        expect(sidebar).to_be_hidden()  # a drawer, closed: it takes no room from the messages
        page.click("#rooms-toggle")
        expect(sidebar).to_be_visible()
        expect(page.locator("#rooms-toggle")).to_have_attribute("aria-expanded", "true")
        assert inside_viewport(page, "#sidebar")
        shot(page, "layout-drawer", size)
        page.keyboard.press("Escape")  # closes it, focus back on its button
        expect(sidebar).to_be_hidden()
        expect(page.locator("#rooms-toggle")).to_be_focused()
    else:
        expect(sidebar).to_be_visible()
        expect(page.locator("#rooms-toggle")).to_be_hidden()
    page.context.close()


def test_a_room_created_by_someone_else_appears_without_a_refresh(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    page = page_at(browser, live, size)
    register_in(page, "frank")
    auth = api_user(live, "grace")
    assert httpx.post(live.direct + "/api/rooms", json={"name": "news"}, headers=auth).is_success
    if size == "phone":
        page.click("#rooms-toggle")
    news = page.locator("#room-list li[data-room='news']")
    expect(news.locator("button.join")).to_be_visible()  # listed, not joined
    shot(page, "live-room-list", size)
    news.locator("button.join").click()
    expect(page.locator("#room-title")).to_have_text("news")
    page.context.close()


def test_text_typed_with_no_room_selected_is_kept_and_the_reason_shown(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    page = page_at(browser, live, size)
    register_in(page, "heidi")
    expect(page.locator("#room-title")).to_have_text("No room selected")
    say(page, "hello, anyone?")
    expect(page.locator("#composer-input")).to_have_value("hello, anyone?")
    expect(page.locator("#error-text")).to_contain_text("Pick a room")
    expect(page.locator("#error-text")).to_contain_text("nothing was sent")
    shot(page, "no-room", size)
    page.context.close()


def test_leaving_a_room_clears_its_history_status(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    page = page_at(browser, live, size)
    register_in(page, "ivan")
    create_room_in(page, "solo", size)
    say(page, "only me")
    expect(page.locator("#history-status")).to_have_text("start of the room")
    # The owner leaves only after a transfer (issue #15): ivan hands solo to a second member.
    other = api_user(live, f"heir-{size}")
    httpx.post(live.direct + "/api/rooms/solo/join", headers=other)
    token = page.evaluate("sessionStorage['hibiki.token']")
    response = httpx.post(
        live.direct + "/api/rooms/solo/transfer",
        json={"user": f"heir-{size}"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    page.click("#leave-button")
    expect(page.locator("#room-title")).to_have_text("No room selected")
    expect(page.locator("#history-status")).to_have_text("")
    expect(page.locator("#message-list .msg")).to_have_count(0)
    page.context.close()


def test_errors_read_as_sentences_never_as_codes(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    api_user(live, "judy")
    page = page_at(browser, live, size)
    page.fill("#login-name", "judy")
    page.fill("#login-password", PASSWORD)
    page.click("#register-button")
    login_error = page.locator("#login-error")
    expect(login_error).to_have_text("That name is taken: pick another one.")
    expect(login_error).to_have_attribute("data-code", "name_taken")
    page.fill("#login-password", "wrong password")
    page.click("#login-button")
    expect(login_error).to_have_text("Wrong name or password.")
    shot(page, "login-error", size)
    page.fill("#login-name", "judy2")
    page.fill("#login-password", PASSWORD)
    page.click("#register-button")
    expect(page.locator("#status")).to_have_attribute("data-state", "online")
    create_room_in(page, "lobby", size)
    if size == "phone":
        page.click("#rooms-toggle")
    page.fill("#new-room-name", "lobby")
    page.press("#new-room-name", "Enter")
    expect(page.locator("#error-bar")).to_have_attribute("data-code", "name_taken")
    text = page.locator("#error-text").text_content() or ""
    assert text == "That name is taken: pick another one." and "_" not in text
    page.context.close()


def test_every_error_code_has_a_sentence_in_errors_js() -> None:
    table = re.search(r"const ERROR_TEXT = \{(.*?)\n\};", ERRORS_JS.read_text(), re.DOTALL)
    assert table is not None
    keys = set(re.findall(r"^\s{2}([a-z_]+): \"", table.group(1), re.MULTILINE))
    assert {code.value for code in ErrorCode} <= keys
    documented = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
    section = documented.read_text().split("\n## Error codes\n")[1].split("\n## ")[0]
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    assert codes and codes <= keys  # protocol.md's table (docs/http.md adds the HTTP-only ones)


def test_multi_line_messages_times_days_and_groups(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    auth = api_user(live, "kim")
    assert httpx.post(live.direct + "/api/rooms", json={"name": "log"}, headers=auth).is_success
    batch = {"messages": [{"text": f"old {i}"} for i in (1, 2)] + [{"text": "today 1"}]}
    response = httpx.post(live.direct + "/api/rooms/log/messages:batch", json=batch, headers=auth)
    assert response.status_code == 201
    # The API cannot backdate a message: move the first two three days back in the file.
    three_days_ago = int((time.time() - 3 * 86400) * 1000)
    with sqlite3.connect(live.db_path) as db:
        db.execute("UPDATE messages SET ts = ? + seq WHERE seq <= 2", (three_days_ago,))
    page = page_at(browser, live, size)
    log_in(page, "kim")
    messages = page.locator("#message-list .msg")
    expect(messages).to_have_count(3)
    days = page.locator("#message-list .day")
    expect(days).to_have_count(2)  # one separator per day, local time
    expect(days.last).to_have_text("Today")
    expect(messages.nth(1)).to_have_class(re.compile(r"\bcont\b"))  # same author, minutes apart
    expect(messages.nth(1).locator(".user")).to_have_count(0)
    expect(messages.nth(2).locator(".user")).to_have_text("kim")  # a new day starts a group
    for i in range(3):
        expect(messages.nth(i).locator("time")).to_have_text(re.compile(r"\d\d?:\d\d"))

    composer = page.locator("#composer-input")
    composer.fill("first line")
    composer.press("Shift+Enter")
    composer.type("second line")
    expect(composer).to_have_value("first line\nsecond line")  # Shift+Enter: a new line
    composer.press("Enter")
    expect(messages).to_have_count(4)
    expect(composer).to_have_value("")
    last = messages.last
    assert last.locator(".text").inner_text() == "first line\nsecond line"
    expect(last.locator(".text br")).to_have_count(0)  # text, never markup
    expect(last).to_have_class(re.compile(r"\bcont\b"))  # follows "today 1" by kim
    say(page, XSS)
    expect(messages.last.locator(".text")).to_have_text(XSS)
    expect(page.locator("#message-list img")).to_have_count(0)
    shot(page, "messages", size)
    page.context.close()


def test_the_favicon_is_served(browser: Browser, live: ServerThread) -> None:
    icon = httpx.get(live.direct + "/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.url.path == "/static/favicon.svg" and b"<svg" in icon.content
    page = page_at(browser, live, "desktop")
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.locator("link[rel=icon]").get_attribute("href") == "/static/favicon.svg"
    assert failed == []
    page.context.close()


def test_the_error_bar_never_covers_the_newest_message(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    auth = api_user(live, "leo")
    assert httpx.post(live.direct + "/api/rooms", json={"name": "busy"}, headers=auth).is_success
    batch = {"messages": [{"text": f"line {i}"} for i in range(1, 41)]}
    response = httpx.post(live.direct + "/api/rooms/busy/messages:batch", json=batch, headers=auth)
    assert response.status_code == 201
    page = page_at(browser, live, size)
    log_in(page, "leo")
    newest = page.locator("#message-list .msg").last
    expect(newest.locator(".text")).to_have_text("line 40")
    say(page, "x" * 4001)  # refused: text_too_long
    expect(page.locator("#error-bar")).to_be_visible()
    expect(page.locator("#error-bar")).to_have_attribute("data-code", "text_too_long")
    expect(page.locator("#composer-input")).to_have_value("x" * 4001)  # given back
    page.wait_for_function(
        "() => { const b = document.getElementById('messages');"
        " return b.scrollHeight - b.scrollTop - b.clientHeight < 2; }",
        timeout=STEP * 1000,
    )
    shot(page, "error-bar", size)
    assert not intersects(box(page, "#message-list .msg:last-child"), box(page, "#error-bar"))
    messages = box(page, "#messages")
    last = box(page, "#message-list .msg:last-child")
    assert last["y"] + last["height"] <= messages["y"] + messages["height"] + 1  # in view
    assert inside_viewport(page, "#error-bar") and inside_viewport(page, "#composer-input")
    page.keyboard.press("Escape")
    expect(page.locator("#error-bar")).to_be_hidden()
    page.context.close()

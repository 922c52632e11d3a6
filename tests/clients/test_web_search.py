"""The web client's search box (issue #15) in Chromium, at a desktop and a phone size.

Words over every room of the user or the open room only, newest first, matched words marked as
text (never HTML), "More results" by the keyset cursor, a result opening its room at a message
older than the first history page, sentences for an empty or too long query, Escape closing.
Screenshots go to `test-artifacts/web-client/<feature>-<size>.png`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .test_web_client import ServerThread
from .test_web_features import Account, finish, log_in, message, open_at, room_of, shot, size

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["size"]  # a fixture, used by name

RETRIES = 21  # with the two others, one more than a page of 20 results


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("web-search")) as running:
        yield running


def search_for(page: Page, query: str) -> None:
    page.fill("#search-query", query)
    page.press("#search-query", "Enter")


def test_search_pages_marks_words_as_text_and_opens_an_old_message(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    me, other = Account(live, f"find-{size}"), Account(live, f"find-bob-{size}")
    ops = room_of(me, f"ops-{size}", other)
    dev = room_of(me, f"dev-{size}")
    fillers = [f"filler {i}" for i in range(80)]
    retries = [f"deploy failed try {i}" for i in range(RETRIES)]
    other.post(ops, "deploy failed on <b>web1</b>", *fillers, *retries)
    me.post(dev, "the deploy failed again")
    page = open_at(browser, live, size)
    log_in(page, me.name)

    page.keyboard.press("/")  # from anywhere but a text field
    expect(page.locator("#side-panel")).to_have_attribute("data-page", "search")
    expect(page.locator("#search-query")).to_be_focused()
    status = page.locator("#search-status")
    search_for(page, "  !! ")
    expect(status).to_have_text("Type a word to search for.")
    expect(status).to_have_attribute("data-code", "query_empty")
    search_for(page, "x" * 201)
    expect(status).to_have_text("That search is too long (200 characters at most).")

    search_for(page, "deploy fai")  # the last word is a prefix
    hits = page.locator("#search-results .search-hit")
    expect(hits).to_have_count(20)
    expect(status).to_have_text("20 messages in your rooms, newest first; more below.")
    newest = hits.first
    expect(newest.locator(".hit-room")).to_have_text(dev)
    expect(newest.locator(".hit-user")).to_have_text(me.name)
    expect(newest.locator(".hit-text")).to_have_text("the deploy failed again")
    expect(newest.locator("mark")).to_have_text(["deploy", "failed"])
    expect(hits.nth(1).locator(".hit-text")).to_have_text(f"deploy failed try {RETRIES - 1}")
    shot(page, "search", size)

    page.click("#search-more")
    expect(hits).to_have_count(RETRIES + 2)
    expect(page.locator("#search-more")).to_be_hidden()
    oldest = hits.last
    expect(oldest.locator(".hit-text")).to_have_text("deploy failed on <b>web1</b>")
    expect(oldest.locator(".hit-text b")).to_have_count(0)  # text, never HTML
    expect(hits.nth(20)).to_be_focused()  # the first of the new page

    oldest.click()  # 101 messages after it: older than the room's first page of history
    expect(page.locator("#room-title")).to_have_text(ops)
    found = message(page, "deploy failed on <b>web1</b>")
    expect(found).to_be_in_viewport()
    expect(found).to_be_focused()
    if size == "phone":
        expect(page.locator("#side-panel")).to_be_hidden()  # it covered the room
    shot(page, "search-opened", size)

    page.click("#search-button")
    expect(page.locator("#search-query")).to_be_focused()
    search_for(page, "again")
    expect(hits).to_have_count(1)
    page.check("#search-this-room")  # the open room only: ops
    expect(status).to_have_text(f"No message in {ops} has “again”.")
    expect(hits).to_have_count(0)
    page.keyboard.press("Escape")
    expect(page.locator("#side-panel")).to_be_hidden()
    expect(page.locator("#search-button")).to_be_focused()
    finish(page)

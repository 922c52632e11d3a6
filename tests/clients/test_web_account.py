"""The web client's account page (issue #15) in Chromium, at a desktop and a phone size.

Sessions listed and revoked (one, or all others), the display name shown on one's messages, a
password change that closes the other sessions' pages with a sentence on their login screen.
Screenshots go to `test-artifacts/web-client/<feature>-<size>.png`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .test_client import PASSWORD
from .test_web_client import ServerThread, say
from .test_web_features import Account, finish, log_in, message, open_at, room_of, shot, size

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["size"]  # a fixture, used by name


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("web-account")) as running:
        yield running


def test_the_account_page_lists_and_revokes_sessions_and_changes_name_and_password(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    me = Account(live, f"acct-{size}")
    room_of(me, f"acct-{size}")
    script = Account(live, me.name, register=False)  # a third session, labelled by its login
    page, elsewhere = open_at(browser, live, size), open_at(browser, live, size)
    log_in(page, me.name)
    log_in(elsewhere, me.name)
    page.click("#account-button")
    panel = page.locator("#side-panel")
    expect(panel).to_be_visible()
    sessions = page.locator("#session-list li")
    expect(sessions).to_have_count(4)  # two scripts, two pages
    current = page.locator("#session-list li.current")
    expect(current).to_have_count(1)
    expect(current.locator(".this-device")).to_have_text("this device")
    expect(current.locator(".device")).to_have_text("Chrome on Linux")
    expect(current.locator(".last-used")).to_contain_text("last used")
    shot(page, "account", size)

    # Revoke one session: its token stops working.
    labelled = page.locator("#session-list li", has_text=f"{me.name}'s script")
    expect(labelled).to_have_count(2)
    labelled.first.locator("button.revoke").click()
    expect(labelled).to_have_count(1)
    assert [me.call("GET", "/api/me").status_code, script.call("GET", "/api/me").status_code].count(
        401
    ) == 1

    # The display name: saved, and shown on one's messages.
    page.fill("#display-name", "Acct <b>Person</b>")
    page.press("#display-name", "Enter")
    expect(page.locator("#profile-status")).to_contain_text("Acct <b>Person</b>")
    page.keyboard.press("Escape")  # closes the panel, focus back on its button
    expect(panel).to_be_hidden()
    expect(page.locator("#account-button")).to_be_focused()
    say(page, "signed")
    expect(message(page, "signed").locator(".user")).to_have_text("Acct <b>Person</b>")
    expect(page.locator("#message-list b")).to_have_count(0)  # text, never markup

    # The password: a wrong one and a mismatch are refused with sentences, then it changes and
    # every other session ends; the other page says why on its login screen.
    page.click("#account-button")
    status = page.locator("#password-status")
    page.fill("#old-password", "not the password")
    page.fill("#new-password", "a new password")
    page.fill("#new-password-again", "a new password")
    page.click("#password-form button[type=submit]")
    expect(status).to_have_attribute("data-code", "bad_credentials")
    expect(status).to_have_text("The current password is wrong: nothing was changed.")
    page.fill("#old-password", PASSWORD)
    page.fill("#new-password", "a new password")
    page.fill("#new-password-again", "another one")
    page.click("#password-form button[type=submit]")
    expect(status).to_have_attribute("data-code", "passwords_differ")
    page.fill("#new-password-again", "a new password")
    page.click("#password-form button[type=submit]")
    expect(status).to_have_text("Password changed. 2 other sessions were logged out.")
    expect(sessions).to_have_count(1)
    expect(page.locator("#revoke-others")).to_be_hidden()
    expect(elsewhere.locator("#login-view")).to_be_visible()
    login_error = elsewhere.locator("#login-error")
    expect(login_error).to_have_attribute("data-code", "session_revoked")
    expect(login_error).to_contain_text("You were logged out")
    shot(elsewhere, "session-revoked", size)
    expect(page.locator("#status")).to_have_attribute("data-state", "online")  # this one stays
    finish(page, "401 /api/password")  # the wrong password, refused
    finish(elsewhere)


def test_log_out_all_other_sessions(
    browser: Browser,
    live: ServerThread,
) -> None:
    from playwright.sync_api import expect

    me = Account(live, "everyone-else")
    others = [Account(live, me.name, register=False) for _ in range(2)]
    page = open_at(browser, live, "desktop")
    log_in(page, me.name)
    page.click("#account-button")
    expect(page.locator("#session-list li")).to_have_count(4)
    page.click("#revoke-others")
    expect(page.locator("#sessions-status")).to_have_text("Logged out 3 other sessions.")
    expect(page.locator("#session-list li")).to_have_count(1)
    assert all(other.call("GET", "/api/me").status_code == 401 for other in [me, *others])
    finish(page)

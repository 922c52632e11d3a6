"""The web client's rooms with settings and roles (issue #15) in Chromium, at desktop and phone.

Creating a private room with a topic, the room list's mark, the topic in the header; the room
page in the side panel: members with roles, the actions a role allows (and none it does not),
invite, kick (the kicked user's list loses the room with a sentence), a live topic, slow mode's
wait in the composer, a refusal as a sentence, a promotion seen live, ban, unban and transfer.
Two users in two browser contexts where a feature involves two. Screenshots go to
`test-artifacts/web-client/<feature>-<size>.png`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .test_web_client import ServerThread, say
from .test_web_features import Account, finish, log_in, message, open_at, shot, size

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

__all__ = ["size"]  # a fixture, used by name


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("web-rooms")) as running:
        yield running


def room_row(page: Page, room: str) -> Locator:
    return page.locator(f"#room-list li[data-room='{room}']")


def member(page: Page, user: str) -> Locator:
    return page.locator(f"#member-list li[data-user='{user}']")


def create_room(page: Page, size: str, name: str, topic: str, *, private: bool) -> None:
    if size == "phone":
        page.click("#rooms-toggle")
    page.fill("#new-room-name", name)
    page.fill("#new-room-topic", topic)
    if private:
        page.check("#new-room-private")
    page.click("#create-room-form button[type=submit]")


def test_a_private_room_with_a_topic_invite_live_topic_and_kick(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    owner, bob = Account(live, f"own-{size}"), Account(live, f"bob-{size}")
    team = f"team-{size}"
    page, theirs = open_at(browser, live, size), open_at(browser, live, size)
    log_in(page, owner.name)
    log_in(theirs, bob.name)
    create_room(page, size, team, "plans for <i>Q1</i>", private=True)
    expect(page.locator("#room-title")).to_have_text(team)
    expect(page.locator("#room-topic")).to_have_text("plans for <i>Q1</i>")  # as text
    expect(room_row(page, team).locator(".private-mark")).to_have_text("private")
    expect(room_row(theirs, team)).to_have_count(0)  # private: bob does not see it

    page.click("#room-panel-button")
    expect(page.locator("#side-panel")).to_have_attribute("data-page", "room")
    expect(member(page, owner.name).locator(".role")).to_have_text("owner")
    expect(page.locator("#room-settings-form")).to_be_visible()  # the owner edits settings
    page.fill("#invite-name", "nobody-at-all")
    page.press("#invite-name", "Enter")
    expect(page.locator("#room-status")).to_have_text("There is nobody by that name.")
    expect(page.locator("#room-status")).to_have_attribute("data-code", "no_such_user")
    page.fill("#invite-name", bob.name)
    page.press("#invite-name", "Enter")
    expect(page.locator("#room-status")).to_have_text(f"{bob.name} is now a member.")
    expect(member(page, bob.name).locator("button.kick")).to_be_visible()
    shot(page, "room-members", size)

    # Bob is a member at once: the room is in his list, marked private; he sees no actions.
    expect(room_row(theirs, team).locator(".private-mark")).to_have_count(1)
    if size == "phone":
        theirs.click("#rooms-toggle")
    room_row(theirs, team).locator(".room-name").click()
    expect(theirs.locator("#room-topic")).to_have_text("plans for <i>Q1</i>")
    theirs.click("#room-panel-button")
    expect(member(theirs, owner.name)).to_be_visible()
    expect(theirs.locator("#member-list button")).to_have_count(0)
    expect(theirs.locator("#room-settings-form, #invite-form, #unban-form")).to_have_count(0)
    shot(theirs, "room-member-view", size)
    theirs.click("#side-panel-close")

    # The owner deletes anyone's message (Delete only: editing is the author's).
    page.keyboard.press("Escape")  # the panel closes (it covers the room on a phone)
    expect(page.locator("#side-panel")).to_be_hidden()
    expect(page.locator("#room-panel-button")).to_be_focused()
    bob.post(team, "oops, wrong room")
    oops = message(page, "oops, wrong room")
    oops.locator(".msg-actions").click()
    expect(oops.get_by_role("menuitem")).to_have_text(["Delete"])
    oops.get_by_role("menuitem", name="Delete").click()
    expect(page.locator("#confirm-text")).to_contain_text(f"this message by {bob.name}")
    page.click("#confirm-ok")
    expect(theirs.locator("#message-list .msg.deleted .tombstone")).to_have_count(1)
    expect(theirs.locator("#message-list .msg .msg-actions")).to_have_count(0)  # a member

    page.click("#room-panel-button")

    page.fill("#room-topic-input", "release on friday")
    page.click("#room-settings-form button[type=submit]")
    expect(page.locator("#room-status")).to_have_text("Saved.")
    expect(theirs.locator("#room-topic")).to_have_text("release on friday")  # live
    expect(page.locator("#room-settings-save")).to_be_focused()  # kept through the redraw

    member(page, bob.name).locator("button.kick").click()
    expect(member(page, bob.name)).to_have_count(0)
    expect(room_row(theirs, team)).to_have_count(0)
    expect(theirs.locator("#error-text")).to_have_text(f"{owner.name} removed you from {team}.")
    expect(theirs.locator("#room-title")).not_to_have_text(team)
    shot(theirs, "room-kicked", size)
    finish(page)
    finish(theirs)


def test_slow_mode_refusal_promotion_ban_unban_and_transfer(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    owner, me, carol = (Account(live, f"{who}-{size}") for who in ("boss", "mia", "carol"))
    hall = f"hall-{size}"
    assert owner.call("POST", "/api/rooms", {"name": hall, "topic": "all hands"}).status_code == 201
    for who in (me, carol):
        assert who.call("POST", f"/api/rooms/{hall}/join").is_success
    carol.post(hall, "hi from carol")  # before slow mode: a batch then is for admins only
    assert owner.call("PATCH", f"/api/rooms/{hall}", {"slow_mode": 30}).is_success
    page = open_at(browser, live, size)
    log_in(page, me.name)
    expect(page.locator("#room-title")).to_have_text(hall)
    expect(page.locator("#composer-input")).to_have_attribute(
        "placeholder", "Message (slow mode: one every 30 s)"
    )
    say(page, "first")
    expect(page.locator("#message-list .msg .text")).to_have_text(["hi from carol", "first"])
    expect(message(page, "hi from carol").locator(".msg-actions")).to_have_count(0)
    say(page, "second")
    notice = page.locator("#error-text")
    expect(notice).to_contain_text("This room is in slow mode: you can send your next message in")
    expect(notice).to_contain_text("s. Your text is still in the box.")
    expect(page.locator("#error-bar")).to_have_attribute("data-code", "slow_mode")
    expect(page.locator("#composer-input")).to_have_value("second")
    shot(page, "room-slow-mode", size)

    page.click("#room-panel-button")
    expect(member(page, carol.name)).to_be_visible()
    expect(page.locator("#member-list button")).to_have_count(0)  # a member: no actions
    expect(page.locator("#invite-form")).to_be_visible()  # any member invites to a public room
    expect(page.locator("#room-settings-form")).to_have_count(0)
    expect(page.locator(".room-settings")).to_contain_text("Slow mode: one message every 30 s.")

    promoted = owner.call("PUT", f"/api/rooms/{hall}/members/{me.name}", {"role": "admin"})
    assert promoted.is_success, promoted.text
    expect(page.locator("#room-settings-form")).to_be_visible()  # live: now an admin
    expect(member(page, carol.name).locator("button.kick")).to_be_visible()
    expect(member(page, owner.name).locator("button")).to_have_count(0)  # not the owner
    expect(page.locator("#composer-input")).to_have_attribute("placeholder", "Message")
    expect(message(page, "hi from carol").locator(".msg-actions")).to_have_count(1)  # may delete

    member(page, carol.name).locator("button.ban").click()
    expect(page.locator("#confirm-text")).to_contain_text(f"Ban {carol.name} from {hall}?")
    page.click("#confirm-ok")
    expect(member(page, carol.name)).to_have_count(0)
    assert carol.call("POST", f"/api/rooms/{hall}/join").status_code == 403  # banned
    page.fill("#unban-name", carol.name)
    page.press("#unban-name", "Enter")
    expect(page.locator("#room-status")).to_have_text(f"{carol.name} may come back now.")
    assert carol.call("POST", f"/api/rooms/{hall}/join").is_success

    given = owner.call("POST", f"/api/rooms/{hall}/transfer", {"user": me.name})
    assert given.is_success, given.text
    expect(member(page, me.name).locator(".role")).to_have_text("owner")
    member(page, owner.name).locator("button.transfer").click()  # give it back
    expect(page.locator("#confirm-text")).to_contain_text(f"Make {owner.name} the owner of {hall}?")
    shot(page, "room-transfer", size)
    page.click("#confirm-ok")
    expect(page.locator("#room-status")).to_have_text(f"{owner.name} now owns the room.")
    expect(member(page, me.name).locator(".role")).to_have_text("admin")
    expect(member(page, owner.name).locator("button")).to_have_count(0)  # an admin's view
    finish(page)


def test_a_banned_user_loses_the_room_and_is_told_why_a_join_is_refused(
    browser: Browser,
    live: ServerThread,
    size: str,
) -> None:
    from playwright.sync_api import expect

    owner, me = Account(live, f"host-{size}"), Account(live, f"guest-{size}")
    club = f"club-{size}"
    assert owner.call("POST", "/api/rooms", {"name": club}).status_code == 201
    assert me.call("POST", f"/api/rooms/{club}/join").is_success
    page = open_at(browser, live, size)
    log_in(page, me.name)
    expect(page.locator("#room-title")).to_have_text(club)
    page.click("#room-panel-button")
    expect(member(page, owner.name).locator(".role")).to_have_text("owner")

    banned = owner.call("POST", f"/api/rooms/{club}/ban", {"user": me.name})
    assert banned.is_success, banned.text
    expect(page.locator("#side-panel")).to_be_hidden()  # it showed the room
    expect(page.locator("#error-text")).to_have_text(f"{owner.name} banned you from {club}.")
    expect(page.locator("#error-bar")).to_have_attribute("data-code", "banned")
    expect(room_row(page, club)).to_have_count(0)

    if size == "phone":
        page.click("#rooms-toggle")
    page.click("#refresh-rooms")  # a public room: listed again, to join
    room_row(page, club).locator("button.join").click()
    expect(page.locator("#error-text")).to_have_text(
        "You are banned from that room: an admin or its owner can unban you."
    )
    expect(page.locator("#room-title")).not_to_have_text(club)
    shot(page, "room-banned", size)
    finish(page)

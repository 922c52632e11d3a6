"""The terminal client as a person uses it: a real process on a pseudo-terminal, keys typed into
it, its screen read back, with another client on the other end of the room."""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from client import RequestError
from client.terminal import printable
from protocol import Message

from ..conftest import STEP, Account, RunningServer
from .test_client import PASSWORD, chat, next_of, proxy_to, users_in_room

ROOT = Path(__file__).resolve().parents[2]


class Terminal:
    """The pty's master side: what the program printed, and a keyboard."""

    def __init__(self, process: trio.Process, master: trio.lowlevel.FdStream) -> None:
        self.process = process
        self.master = master
        self.output = ""
        self._read_to = 0

    async def expect(self, text: str) -> str:
        """Wait until `text` appears after what earlier calls matched; the output up to it."""
        with trio.fail_after(STEP):
            while (at := self.output.find(text, self._read_to)) < 0:
                try:
                    chunk = await self.master.receive_some(65536)
                except trio.BrokenResourceError:  # EIO: the program exited
                    chunk = b""
                assert chunk, f"the program ended without printing {text!r}:\n{self.output}"
                self.output += chunk.decode(errors="replace")
        seen = self.output[self._read_to : at + len(text)]
        self._read_to = at + len(text)
        return seen

    async def type(self, keys: str) -> None:
        await self.master.send_all(keys.encode())


@asynccontextmanager
async def terminal(server: str, account: Account, *args: str) -> AsyncIterator[Terminal]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "HIBIKI_CHAT_PASSWORD": PASSWORD, "TERM": "xterm"}
    command = [sys.executable, "-m", "client.terminal", "--server", server]
    command += ["--user", account.name, *args]
    try:
        process = await trio.lowlevel.open_process(
            command, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env
        )
    finally:
        os.close(slave)
    async with trio.lowlevel.FdStream(master) as stream:
        try:
            yield Terminal(process, stream)
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def test_terminal_sends_typed_lines_and_shows_other_users_messages(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with terminal(server.http, alice) as term, chat(server, bob) as b:
        await term.expect(f"as {alice.name}; rooms: lobby")
        await term.expect("[lobby]> ")
        await term.type("hello from the terminal\r")
        got = await next_of(b.events(), Message)
        assert (got.user, got.text) == (alice.name, "hello from the terminal")

        # The server refuses control characters (text_invalid); those stored before it did are
        # shown, never obeyed, by the terminal (test_printable_...).
        with pytest.raises(RequestError, match="text_invalid"):
            await b.send("lobby", "hi terminal \x1b[2J")
        await b.send("lobby", "hi terminal <b>")
        await term.expect(f"[lobby] {bob.name}: hi terminal <b>")

        await term.type("/history 5\r")
        listing = await term.expect("--- end of history ---")
        assert "--- last 2 messages in lobby ---" in listing
        assert listing.index("hello from the terminal") < listing.index("hi terminal")

        await term.type("/rooms\r")
        await term.expect("* lobby")
        await term.type("/switch nowhere\r")
        await term.expect("! not in nowhere")
        await term.type("/quit\r")
        with trio.fail_after(STEP):
            assert await term.process.wait() == 0


def test_printable_shows_control_characters_instead_of_obeying_them() -> None:
    # A message must not move the cursor, clear the screen or retitle the terminal.
    assert printable("a\x1b[2J\x07b\x9b1m\x7f") == "a^[[2J^Gb<9b>1m^?"
    assert printable("two\nlines\tand a tab") == "two\n    lines    and a tab"


async def test_terminal_typing_is_edited_and_a_wrong_password_exits_1(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with terminal(server.http, alice, "--password", "not the one") as term:
        await term.expect("! bad_credentials")
        with trio.fail_after(STEP):
            assert await term.process.wait() == 1
    async with terminal(server.http, alice) as term, chat(server, bob) as b:
        await term.expect("[lobby]> ")
        await term.type("hellp\x7fo wor\x1b[D\x17world\r")  # Backspace, an arrow key, Ctrl-W
        got = await next_of(b.events(), Message)
        assert got.text == "hello world"


async def test_terminal_reconnects_and_sends_what_was_typed_while_offline(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with (
        proxy_to(server.port) as proxy,
        chat(server, bob) as b,
        terminal(f"http://127.0.0.1:{proxy.port}", alice) as term,
    ):
        await term.expect("[lobby]> ")
        proxy.close()
        await term.expect("* connection lost")
        await term.type("typed while offline\r")
        await term.expect("goes out on reconnect")
        await b.send("lobby", "said while alice was away")
        proxy.reopen()
        await term.expect("* reconnected")
        await term.expect(f"[lobby] {bob.name}: said while alice was away")
        await term.expect(f"[lobby] {alice.name}: typed while offline")
        texts = [(await next_of(b.events(), Message)).text for _ in range(2)]
        assert texts == ["said while alice was away", "typed while offline"]
        page = await b.history("lobby")
        assert [m.text for m in page.messages] == texts  # stored once


async def test_terminal_create_says_created_and_not_joined_from_another_session(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, _ = await users_in_room(http, "lobby")
    async with terminal(server.http, alice) as term:
        await term.expect("[lobby]> ")
        await term.type("/create garden\r")
        await term.expect("* created garden")
        await term.expect("[garden]> ")
        await term.type("/rooms\r")  # anything printed after the creation shows up before this
        await term.expect("* garden")
        assert "from another session" not in term.output
        await term.type("/quit\r")
        with trio.fail_after(STEP):
            assert await term.process.wait() == 0


async def test_terminal_search_shows_the_newest_matches_across_rooms(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    alice, bob = await users_in_room(http, "lobby")
    async with terminal(server.http, alice) as term, chat(server, bob) as b:
        await term.expect("[lobby]> ")
        await b.send("lobby", "the deploy failed")
        await b.send("lobby", "unrelated")
        await b.send("lobby", "deployed fine now")
        await term.expect(f"[lobby] {bob.name}: deployed fine now")
        await term.type("/search deplo\r")
        listing = await term.expect("--- end of results ---")
        assert "--- 2 results for 'deplo' ---" in listing
        assert listing.index("deployed fine now") < listing.index("the deploy failed")
        assert "unrelated" not in listing.split("--- 2 results")[1]
        await term.type("/search !!\r")
        await term.expect("! query_empty")

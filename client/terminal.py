"""`hibiki chat`: a terminal chat client on the client library.

    hibiki chat --server http://127.0.0.1:8080 --user alice [--register] [--room lobby]

Live messages print as `#N [room] user: text` above the input line (`N` names the message for
`/edit N` and `/delete N`); a plain line goes to the current room; commands start with `/`
(`/help` lists them). The prompt shows the rooms with unread messages; the current room's are
marked read as its newest messages are shown. The connection is replaced transparently (with
resume) when it drops; nothing typed meanwhile is lost.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

import httpx
import trio

from protocol import (
    Deleted,
    Edited,
    Error,
    Joined,
    Left,
    Message,
    Presence,
    Resync,
    Unread,
    Welcome,
)

from ._client import ChatClient
from ._errors import ApiError, ChatClientError, RequestError
from ._events import ClientEvent, Disconnected
from ._screen import Screen, cbreak_mode, printable
from ._shown import ShownMessages

__all__ = ["main", "printable"]

DRAIN_SECONDS = 5.0  # on quitting, how long lines not yet sent may take
# Reads are batched: each one spends a token of the user's rate limit (docs/protocol.md, read).
READ_DELAY = 0.5
HELP = """commands:
  /join ROOM      join a room (and make it current)    /create ROOM   create a room and join it
  /leave [ROOM]   leave a room (default: current)      /switch ROOM   make a joined room current
  /rooms          list every room                      /history [N]   last N messages (20)
  /search WORDS   find messages in your rooms (newest first; the last word may be a prefix)
  /edit N TEXT    replace the text of your message #N  /delete N      delete your message #N
                  (N: the number before a message line, or "last": your latest one in this room)
  /quit           leave (Ctrl-D too)                   anything else is sent to the current room
the prompt lists rooms with unread messages; the current room's are read as they are shown"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hibiki chat", description="hibiki terminal client")
    parser.add_argument("--server", default="http://127.0.0.1:8080", help="server's HTTP URL")
    parser.add_argument("--user", required=True, help="account name")
    parser.add_argument(
        "--password",
        help="password (default: $HIBIKI_CHAT_PASSWORD, else asked for on the terminal)",
    )
    parser.add_argument("--register", action="store_true", help="create the account first")
    parser.add_argument("--room", help="room to start in (default: the first joined one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the terminal client; the exit status (0 after /quit, 1 on a login failure)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["chat"]:
        args = args[1:]
    options = _parser().parse_args(args)
    password = options.password or os.environ.get("HIBIKI_CHAT_PASSWORD")
    if not password:
        password = getpass.getpass(f"password for {options.user}: ")
    try:
        return trio.run(_chat, options, password)
    except KeyboardInterrupt:
        return 130


async def _chat(options: argparse.Namespace, password: str) -> int:
    with cbreak_mode(sys.stdin.fileno()) as interactive:
        screen = Screen(sys.stdout, interactive and sys.stdout.isatty())
        try:
            async with ChatClient.connect(
                options.server, options.user, password, register=options.register
            ) as client:
                return await TerminalChat(client, screen, options.server, options.room).run()
        except ApiError as exc:
            screen.show(f"! {exc.code}: {exc.message}")
        except (httpx.HTTPError, ValueError) as exc:
            screen.show(f"! cannot reach {options.server}: {exc}")
        finally:
            if interactive:
                sys.stdout.write("\r\x1b[K")
                sys.stdout.flush()
    return 1


class TerminalChat:
    """The interactive loop: input lines in, commands and sends out, events printed."""

    def __init__(
        self, client: ChatClient, screen: Screen, server: str, room: str | None = None
    ) -> None:
        self.client = client
        self.screen = screen
        self.server = server
        self.current: str | None = None
        self._wanted_room = room
        self._exit = 0
        self._greeted = False
        self._lines_in, self._lines_out = trio.open_memory_channel[str](100)
        self._lines_done = trio.Event()
        self.shown = ShownMessages()
        self._to_mark: dict[str, int] = {}  # room -> seq the user has seen, not yet marked read
        self._mark_wanted = trio.Event()

    async def run(self) -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._show_events, nursery.cancel_scope)
            nursery.start_soon(self._run_lines)
            nursery.start_soon(self._mark_reads)
            await self._read_input()
            # Lines already typed (or piped in) still go out, if the server lets them soon.
            await self._lines_in.aclose()
            with trio.move_on_after(DRAIN_SECONDS):
                await self._lines_done.wait()
            nursery.cancel_scope.cancel()
        return self._exit

    def _set_current(self, room: str | None) -> None:
        self.current = room
        self._refresh_prompt()

    def _refresh_prompt(self) -> None:
        """`[room]> `, after the rooms with unread messages: `(unread: dev 3, lobby 1) [room]> `."""
        counts = self.client.unread
        unread = [f"{room} {_count(counts[room])}" for room in sorted(counts) if counts[room]]
        prompt = f"[{self.current}]> " if self.current else "> "
        if unread:
            prompt = f"(unread: {', '.join(unread)}) {prompt}"
        if prompt != self.screen.prompt:
            self.screen.prompt = prompt
            self.screen.redraw()

    # Input ----------------------------------------------------------------------------------
    async def _read_input(self) -> None:
        editor = self.screen.editor
        fd = sys.stdin.fileno()
        while not editor.eof:
            data = await trio.to_thread.run_sync(os.read, fd, 4096, abandon_on_cancel=True)
            for line in editor.feed(data):
                if line.strip() == "/quit":
                    return
                if line.startswith("/") and self.screen.interactive:
                    self.screen.show(f"{self.screen.prompt}{printable(line)}")
                elif line.strip() and not self.client.connected:
                    self.screen.show("* not connected: the message goes out on reconnect")
                await self._lines_in.send(line)
            self.screen.redraw()

    async def _run_lines(self) -> None:
        """One line at a time, in the order typed, so messages keep their order."""
        async for line in self._lines_out:
            try:
                await self._line(line)
            except RequestError as exc:
                self.screen.show(f"! {exc.code}: {exc.message}")
            except (ApiError, httpx.HTTPError) as exc:
                self.screen.show(f"! {exc}")
        self._lines_done.set()

    async def _line(self, line: str) -> None:
        if not line.strip():
            return
        if not line.startswith("/"):
            if self.current is None:
                self.screen.show("! no current room: /join one first (/rooms lists them)")
                return
            await self.client.send(self.current, line)  # the echoed message shows it
            return
        command, *args = line.split()
        arg = args[0] if args else None
        if command == "/join" and arg:
            joined = await self.client.join(arg)
            self.screen.show(f"* joined {arg}; online: {', '.join(joined.online)}")
            self._set_current(arg)
        elif command == "/create" and arg:
            await self.client.create_room(arg)
            self.screen.show(f"* created {arg}")
            self._set_current(arg)
        elif command == "/leave" and (arg or self.current):
            room = arg or self.current
            assert room is not None
            await self.client.leave(room)
            self.screen.show(f"* left {room}")
            if room == self.current:
                self._set_current(min(self.client.rooms, default=None))
        elif command == "/switch" and arg:
            if arg in self.client.rooms:
                self._switch(arg)
            else:
                self.screen.show(f"! not in {arg}: /join {arg} first")
        elif command == "/rooms":
            await self._list_rooms()
        elif command == "/history":
            count = int(arg) if arg and arg.isdigit() else 20
            await self._history(count)
        elif command == "/search" and args:
            await self._search(line.split(None, 1)[1])
        elif command in ("/edit", "/delete"):
            await self._change(line)
        elif command == "/help":
            self.screen.show(HELP)
        else:
            self.screen.show(f"! unknown command or missing argument: {line.strip()} (/help)")

    async def _list_rooms(self) -> None:
        rooms = await self.client.list_rooms()
        if not rooms:
            self.screen.show("* no rooms yet: /create one")
        counts = self.client.unread
        for room in rooms:
            mark = "*" if room.name == self.current else " "
            state = "joined" if room.member else "not joined"
            line = f"{mark} {room.name:<24} {state:<11} {room.last_seq} messages"
            if counts.get(room.name):
                line += f", {_count(counts[room.name])} unread"
            self.screen.show(line)

    async def _change(self, line: str) -> None:
        """`/edit N TEXT` or `/delete N`: N is a shown message's number, or `last`."""
        command, which, *rest = [*line.split(maxsplit=2), "", ""][:3]
        text = rest[0].strip()
        if not which or (command == "/edit" and not text):
            usage = "/edit N new text" if command == "/edit" else "/delete N"
            self.screen.show(f"! usage: {usage} (N: the #number of a message line, or last)")
            return
        target = self.shown.find(which, self.current)
        if target is None:
            where = f" in {self.current}" if self.current else ""
            missing = f"no message of yours shown{where}" if which == "last" else "no such line"
            self.screen.show(f"! {missing}: {which}")
            return
        if command == "/edit":
            await self.client.edit(target.room, target.id, text)
        else:
            await self.client.delete(target.room, target.id)
        # The room's `edited`/`deleted` event, ours included, prints the outcome.

    async def _history(self, count: int) -> None:
        if self.current is None:
            self.screen.show("! no current room")
            return
        messages: list[Message] = []
        limit = max(1, min(count, 200))
        async for page in self.client.history_pages(self.current, limit=limit):
            messages[:0] = page.messages
            if len(messages) >= count:
                break
        shown = messages[-count:] if count else []
        self.screen.show(f"--- last {len(shown)} messages in {self.current} ---")
        for message in shown:
            self.screen.show(self.shown.line(message, self.client.user))
        self.screen.show("--- end of history ---")
        if shown:
            self._viewed(self.current)

    # Read state -----------------------------------------------------------------------------
    def _viewed(self, room: str) -> None:
        """The user has seen `room`'s newest entries: its cursor moves there soon (batched)."""
        seq = self.client.last_seq.get(room, 0)
        state = self.client.read_state.get(room)
        if seq and (state is None or seq > state.read_seq):
            self._to_mark[room] = max(seq, self._to_mark.get(room, 0))
            self._mark_wanted.set()

    async def _mark_reads(self) -> None:
        while True:
            await self._mark_wanted.wait()
            await trio.sleep(READ_DELAY)  # gathers what arrives meanwhile into one read
            self._mark_wanted = trio.Event()
            marks, self._to_mark = self._to_mark, {}
            for room, seq in marks.items():
                if room in self.client.rooms:
                    try:
                        await self.client.mark_read(room, seq)
                    except RequestError as exc:  # rate_limited, or left meanwhile
                        self.screen.show(f"! marking {room} read: {exc.code}")
                    except ChatClientError:
                        return  # the client is ending: `_show_events` says why
            self._refresh_prompt()

    def _switch(self, room: str) -> None:
        """Make `room` current: the user now looks at it, so what was unread there is read."""
        unread = self.client.unread.get(room, 0)
        if unread:
            self.screen.show(f"* {_count(unread)} unread in {room}: /history {unread} shows them")
        self._set_current(room)
        self._viewed(room)

    async def _search(self, query: str) -> None:
        """The newest page of results across the user's rooms."""
        page = await self.client.search(query)
        self.screen.show(f"--- {len(page.results)} results for {query!r} ---")
        for message in page.results:
            self.screen.show(self.shown.line(message, self.client.user))
        more = "more: narrow the words" if page.next is not None else "end of results"
        self.screen.show(f"--- {more} ---")

    # Events ---------------------------------------------------------------------------------
    async def _show_events(self, done: trio.CancelScope) -> None:
        try:
            async for event in self.client.events():
                self._show(event)
                self._refresh_prompt()
        except ChatClientError as exc:
            self.screen.show(f"! {exc}")
            self._exit = 1
        done.cancel()

    def _show(self, event: ClientEvent) -> None:
        show = self.screen.show
        match event:
            case Message(room=room):
                show(self.shown.line(event, self.client.user))
                if room == self.current:
                    self._viewed(room)
            case Edited() | Deleted():
                show(self.shown.change_line(event))
            case Unread():
                pass  # read elsewhere: the prompt shows the new counts
            case Welcome(rooms=rooms) if not self._greeted:
                self._greeted = True
                counts = self.client.unread
                named = [f"{r} ({_count(counts[r])} unread)" if counts.get(r) else r for r in rooms]
                listed = ", ".join(named) or "none yet (/rooms, /join ROOM)"
                show(f"* connected to {self.server} as {event.user}; rooms: {listed}; /help")
                start = self._wanted_room if self._wanted_room in rooms else None
                self._set_current(start or min(rooms, default=None))
            case Welcome():
                show("* reconnected")
            case Disconnected(code=code, reason=reason, retry_in=delay):
                why = f"close {code}: {reason}" if code is not None else reason
                show(f"* connection lost ({why}); reconnecting in {delay:.1f} s")
            case Presence(room=room, user=user, status=status):
                show(f"* {user} is {status} in {room}")
            case Resync(room=room):
                show(f"* missed too much in {room} while away: /history to read back")
            case Joined(room=room):  # only ours from elsewhere reach here: the rest are answers
                show(f"* joined {room} from another session")
            case Left(room=room):
                show(f"* left {room} from another session")
                if room == self.current:
                    self._set_current(min(self.client.rooms, default=None))
            case Error(code=code, message=message):
                show(f"! {code}: {message}")
            case _:
                pass  # typing indicators and events this client does not show


def _count(unread: int) -> str:
    return "999+" if unread > 999 else str(unread)


if __name__ == "__main__":
    sys.exit(main())

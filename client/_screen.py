"""The terminal client's screen: lines printed above an input line the user is editing.

On a terminal, input is read in cbreak mode (no kernel echo or line editing) so the client knows
what has been typed and can redraw it under each line it prints. Elsewhere (pipes, files) lines
are printed plainly and input is read as plain lines.
"""

from __future__ import annotations

import codecs
import os
import shutil
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

# C0 and C1 controls and DEL, shown in caret notation (ESC is "^["): a message must not be able
# to move the cursor, clear the screen or retitle the terminal.
_VISIBLE = {c: "^" + chr(c ^ 0x40) for c in [*range(0x20), 0x7F]}
_VISIBLE |= {c: f"<{c:02x}>" for c in range(0x80, 0xA0)}
_VISIBLE[ord("\t")] = "    "
_VISIBLE[ord("\n")] = "\n    "


def printable(text: str) -> str:
    """`text` with control characters made visible; newlines become indented line breaks."""
    return text.translate(_VISIBLE)


class LineEditor:
    """Turns keystrokes into lines: printable characters, Backspace, Ctrl-U (erase line), Ctrl-W
    (erase word), Enter; Ctrl-D on an empty line is end of input; escape sequences (arrow keys
    and the like) are ignored."""

    def __init__(self) -> None:
        self.buffer = ""
        self.eof = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""  # an escape sequence being skipped

    def feed(self, data: bytes) -> list[str]:
        """Apply `data`; the lines it completed. `data == b""` means end of input."""
        if not data:
            self.eof = True
            return [self.buffer] if self.buffer else []
        lines = []
        for char in self._decoder.decode(data):
            if self._skip_escape(char):
                continue
            if char in "\r\n":
                lines.append(self.buffer)
                self.buffer = ""
            elif char in "\x7f\b":
                self.buffer = self.buffer[:-1]
            elif char == "\x15":
                self.buffer = ""
            elif char == "\x17":
                self.buffer = self.buffer.rstrip().rpartition(" ")[0]
                self.buffer += " " if self.buffer else ""
            elif char == "\x04":
                self.eof = self.eof or not self.buffer
            elif char >= " ":
                self.buffer += char
        return lines

    def _skip_escape(self, char: str) -> bool:
        if char == "\x1b":
            self._escape = char
            return True
        if not self._escape:
            return False
        self._escape += char
        # ESC [ ... final (CSI), ESC O x (SS3), or ESC x (Alt+x): all swallowed whole.
        if self._escape[1] == "[":
            done = len(self._escape) > 2 and "@" <= char <= "~"
        else:
            done = len(self._escape) == (3 if self._escape[1] == "O" else 2)
        if done:
            self._escape = ""
        return True


class Screen:
    """Prints lines above the input line; on a terminal the input line is redrawn after each."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self.editor = LineEditor()
        self.prompt = "> "

    def show(self, line: str) -> None:
        if self.interactive:
            self.out.write("\r\x1b[K" + line.replace("\n", "\r\n") + "\r\n" + self._input_line())
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def redraw(self) -> None:
        if self.interactive:
            self.out.write("\r\x1b[K" + self._input_line())
            self.out.flush()

    def _input_line(self) -> str:
        width = shutil.get_terminal_size().columns
        room = max(width - len(self.prompt) - 1, 10)
        return self.prompt + printable(self.editor.buffer)[-room:]


@contextmanager
def cbreak_mode(fd: int) -> Iterator[bool]:
    """Cbreak mode on `fd` while inside, restored after; yields whether `fd` is a terminal."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

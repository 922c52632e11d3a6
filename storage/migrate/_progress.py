"""Progress bars for a migration: tqdm on stderr, silent when asked or when not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol

from tqdm import tqdm


class Progress(Protocol):
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


# (what, how many messages in all) -> a bar advanced by `update(n)` and closed once.
ProgressFactory = Callable[[str, int], Progress]


def terminal_progress(*, quiet: bool = False) -> ProgressFactory:
    """Bars on stderr when it is a terminal and not `quiet`; otherwise bars that print nothing."""
    disabled = quiet or not sys.stderr.isatty()

    def open_bar(what: str, total: int) -> Progress:
        bar: Progress = tqdm(
            total=total,
            desc=what,
            unit="msg",
            unit_scale=True,
            file=sys.stderr,
            disable=disabled,
            dynamic_ncols=True,
        )
        return bar

    return open_bar


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(what: str, total: int) -> Progress:
    return _Silent()

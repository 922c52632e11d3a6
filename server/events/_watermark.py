"""Which message ids the elected appender has settled, when ids do not commit in id order.

Sans-I/O: `StreamWatermark.observe` takes what one read of the store returned
(`storage.protocols.StreamRead`) and moves three things:

- `high`, the largest id read so far: the next read asks for ids above it;
- `gaps`, the ranges of ids at or below `high` not read yet, each tagged with the transaction
  horizon (`xmax`) of the read that first saw it missing: a transaction below that tag may
  still commit into it, none at or above it can (ids only grow);
- `settled`, the id below which nothing can appear any more: what the appender stores as its
  cursor, so that a successor re-reads (and re-appends, consumers dedupe) only what is above.

A gap ends when a read shows its ids, or when a read whose `xmin` (oldest transaction still
running before it) has reached the gap's tag still lacks them: those were rolled back.
Without a horizon (SQLite: ids visible in id order) a missing id is missing for good at once.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gap:
    """Ids lo..hi (inclusive) not read yet; final once a read's xmin reaches `tag`."""

    lo: int
    hi: int
    tag: int


class StreamWatermark:
    """See the module docstring; starts with everything up to `settled` settled."""

    def __init__(self, settled: int) -> None:
        self.settled = settled
        self.high = settled
        self.gaps: list[Gap] = []

    def gap_ranges(self) -> list[tuple[int, int]]:
        """The ranges the next read must look into, besides the ids above `high`."""
        return [(g.lo, g.hi) for g in self.gaps]

    def observe(self, ids: Sequence[int], horizon: tuple[int, int] | None) -> None:
        """A read with those gap ranges and `after_id=high` returned `ids` (ascending)."""
        gaps: list[Gap] = []
        for gap in self.gaps:
            if horizon is not None and gap.tag > horizon[0]:  # its writers may be running
                gaps += _left_open(gap, ids)
        previous = self.high
        for i in ids[bisect.bisect_right(ids, self.high) :]:
            if i > previous + 1 and horizon is not None:
                gaps.append(Gap(previous + 1, i - 1, horizon[1]))
            previous = i
        self.high = previous
        self.gaps = gaps
        self.settled = gaps[0].lo - 1 if gaps else self.high


def _left_open(gap: Gap, ids: Sequence[int]) -> list[Gap]:
    """What of `gap` the ascending `ids` did not fill, as gaps with its tag."""
    out: list[Gap] = []
    lo = gap.lo
    start = bisect.bisect_left(ids, gap.lo)
    for i in ids[start : bisect.bisect_right(ids, gap.hi)]:
        if i > lo:
            out.append(Gap(lo, i - 1, gap.tag))
        lo = i + 1
    if lo <= gap.hi:
        out.append(Gap(lo, gap.hi, gap.tag))
    return out

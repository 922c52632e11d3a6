"""Instructions of the SQLite append job alone: `append_batch` of one message, the whole batch at
light load, run in a loop on the writer connection as the writer thread runs it (no trio, no
thread hand-off), counted by callgrind. Unlike the whole-server light-load count, which moves a
few percent between runs with the threads' timing, this repeats to the instruction, so a change
to the append's Python or SQL can be judged on it.

    python scripts/bench_append_instructions.py     # under a minute

Two runs of M1 and M2 appends under callgrind; (I2 - I1) / (M2 - M1) is the per-append figure,
start-up excluded. synchronous=OFF: fsync is a syscall, which callgrind does not count anyway.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_appends(count: int) -> None:
    import trio

    from storage import NewMessage, open_store
    from storage.sqlite._connection import connect
    from storage.sqlite._messages import WriterCursors, append_batch

    with tempfile.TemporaryDirectory(prefix="hibiki-append-") as tmp:
        path = Path(tmp, "append.db")

        async def prepare() -> int:
            async with open_store(path, scrypt_n=2**10) as store:
                user = await store.create_user("writer", "append-bench-pw")
                await store.create_room("room", user.id)
                return user.id

        user_id = trio.run(prepare)
        conn = connect(str(path), "OFF", writer=True)
        cursors = WriterCursors()
        text = "x" * 60
        for k in range(count):
            batch = (NewMessage("room", user_id, "writer", text, f"c{k}"),)
            (result,) = append_batch(conn, cursors, batch)
            assert result.message.seq == k + 1
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m1", type=int, default=200)
    parser.add_argument("--m2", type=int, default=1000)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        run_appends(args.run)
        return
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_fanout_instructions import callgrind_instructions

    counts = [
        callgrind_instructions(__file__, ["--run", str(m)], f"{m} appends")
        for m in (args.m1, args.m2)
    ]
    per = (counts[1] - counts[0]) / (args.m2 - args.m1)
    print(f"append_batch of one message: {per:,.0f} instructions")


if __name__ == "__main__":
    main()

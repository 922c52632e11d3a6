"""What this machine allows: the floors under the fan-out and storage targets, measured with
none of hibiki's server code in the timed part, so a missed target can be told apart from a
slow hot path.

  send    CPU per loopback `send()` of one small frame to each of N connected sockets, the
          sender pinned to one CPU and a reader process to another, one sweep of N sends every
          `--gap-ms` (the low-rate workload: no batching possible); and how long one sweep takes,
          which is how long the last of N recipients waits even if nothing else happened.
  commit  latency of one durable commit of one message: `write` + `fdatasync` of a 4 KiB page
          (what a WAL commit with synchronous=FULL costs at least), back to back and with
          `--commit-gap-ms` between commits (the latency workload's pace: 5,000 deliveries/s to
          N=100 is 50 messages/s), a one-row SQLite transaction on hibiki's schema with
          hibiki's pragmas at that pace, and the round trip of handing an empty job to another
          thread and back at that pace (what moving the commit off the event loop costs).
  insert  SQLite group commit with synchronous=FULL, the rows of `bench_storage.py` (100 rooms,
          500 senders, time-ordered client ids) in batches of 1000, with only `executemany` and
          COMMIT timed: on hibiki's schema (history index on (room, seq), unique client-id
          index), and on a bare table with no secondary index at all.

    python scripts/bench_floor.py                  # all three, about a minute
    python scripts/bench_floor.py --parts send --receivers 5000
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import select
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _loadstats import raise_fd_limit, self_cpu_seconds
from bench_storage import TEXT, Traffic

from protocol import Message, encode
from server.transport.frames import text_frame
from storage.sqlite import connect, migrate

PARTS = ("send", "commit", "insert")
NODE_READER = Path(__file__).resolve().parent / "loadgen_node" / "reader.js"
BARE_TABLE = (
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, room_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " user_id INTEGER NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL,"
    " client_id TEXT)"
)
INSERT = (
    "INSERT INTO messages (id, room_id, seq, user_id, user_name, text, ts, client_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated")
    parser.add_argument("--receivers", type=int, default=1000, help="send: sockets per sweep")
    parser.add_argument("--sweeps", type=int, default=300, help="send: sweeps measured")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="send: pause between sweeps")
    parser.add_argument("--server-cpu", type=int, help="send: CPU of the sender (default: first)")
    parser.add_argument(
        "--reader",
        choices=["auto", "node", "python"],
        default="auto",
        help="send: who reads (auto: node, the load generator's runtime, if installed)",
    )
    parser.add_argument("--commits", type=int, default=300, help="commit: one-message commits")
    parser.add_argument("--commit-gap-ms", type=float, default=20.0, help="commit: pause between")
    parser.add_argument("--messages", type=int, default=200_000, help="insert: rows per run")
    parser.add_argument("--batch", type=int, default=1000, help="insert: rows per commit")
    parser.add_argument("--rounds", type=int, default=2, help="insert: alternating runs of both")
    parser.add_argument("--dir", type=Path, default=None, help="commit/insert: where the files go")
    parser.add_argument("--json-out", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sample_frame() -> bytes:
    """A message event as hibiki frames it (room, ids, a 60-character text, a client id)."""
    message = Message("room0", 1_000_000, 1_000, "user0", TEXT[:60], int(time.time() * 1000))
    return text_frame(encode(message))


# send ------------------------------------------------------------------------------------------
def _reader(listen_port: int, count: int, ready_fd: int, cpus: set[int]) -> None:
    """The receiving side (forked): connects `count` sockets, then drains them until EOF."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    socks = [socket.create_connection(("127.0.0.1", listen_port)) for _ in range(count)]
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    os.write(ready_fd, b"r")
    while by_fd:
        for fd, _ in poller.poll():
            sock = by_fd[fd]
            try:
                if not sock.recv(1 << 16):
                    poller.unregister(fd)
                    sock.close()
                    del by_fd[fd]
            except BlockingIOError:
                pass
    os._exit(0)


def measure_send(args: argparse.Namespace) -> dict[str, Any]:
    return send_floor(
        args.receivers, args.sweeps, args.gap_ms, sender_cpu=args.server_cpu, reader=args.reader
    )


def send_floor(
    receivers: int,
    sweeps: int,
    gap_ms: float,
    *,
    sender_cpu: int | None = None,
    reader: str = "auto",
) -> dict[str, Any]:
    """The send floor: CPU per loopback `send()` of one message frame to each of `receivers`
    sockets, `sweeps` sweeps `gap_ms` apart, this process pinned to `sender_cpu` (default: the
    first it may use) and the reader (`node`, `python` or `auto`) to the others it may use; the
    affinity is restored afterwards. `cpu_us_per_send` is the figure (bench_fanout.py divides
    its µs per delivery by it)."""
    raise_fd_limit(4 * receivers + 256)
    cpus = sorted(os.sched_getaffinity(0))
    if sender_cpu is None:
        sender_cpu = cpus[0]
    reader_cpus = {c for c in cpus if c != sender_cpu}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    node = shutil.which("node") if reader in ("auto", "node") else None
    if reader == "node" and node is None:
        raise SystemExit("send: --reader node needs `node` on the PATH (or use --reader python)")
    node_reader: subprocess.Popen[bytes] | None = None
    pid = 0
    if node is not None:
        node_reader = subprocess.Popen(
            [node, str(NODE_READER), str(port), str(receivers)], stdout=subprocess.PIPE
        )
        if reader_cpus:
            os.sched_setaffinity(node_reader.pid, reader_cpus)
    else:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the reader; it never returns
            try:
                listener.close()
                _reader(port, receivers, ready_w, reader_cpus)
            finally:
                os._exit(1)
    os.sched_setaffinity(0, {sender_cpu})
    socks: list[socket.socket] = []
    try:
        for _ in range(receivers):
            sock, _ = listener.accept()
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as hibiki's sockets
            socks.append(sock)
        if node_reader is not None:
            assert node_reader.stdout is not None
            if node_reader.stdout.readline() != b"ready\n":
                raise SystemExit("send: the node reader failed")
        elif os.read(ready_r, 1) != b"r":
            raise SystemExit("send: the reader process failed")
        frame = sample_frame()
        sweep_ms: list[float] = []
        cpu = 0.0
        for _ in range(sweeps):
            time.sleep(gap_ms / 1000)
            cpu_before, started = self_cpu_seconds(), time.perf_counter()
            for sock in socks:
                sock.send(frame)
            sweep_ms.append((time.perf_counter() - started) * 1000)
            cpu += self_cpu_seconds() - cpu_before
    finally:
        for sock in socks:
            sock.close()
        listener.close()
        if node_reader is not None:
            try:
                node_reader.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node_reader.kill()
                node_reader.wait()
        else:
            os.waitpid(pid, 0)
        os.sched_setaffinity(0, set(cpus))
    sends = receivers * sweeps
    return {
        "receivers": receivers,
        "reader": "node" if node_reader is not None else "python",
        "frame_bytes": len(frame),
        "sender_cpu": sender_cpu,
        "reader_cpus": sorted(reader_cpus),
        "cpu_us_per_send": cpu / sends * 1e6,
        "sweep_ms_p50": statistics.median(sweep_ms),
        "sweep_ms_p99": percentile(sweep_ms, 0.99),
    }


# commit ----------------------------------------------------------------------------------------
def _fdatasync_ms(path: Path, count: int, gap_s: float) -> list[float]:
    page = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times: list[float] = []
    try:
        for _ in range(count):
            time.sleep(gap_s)
            started = time.perf_counter()
            os.write(fd, page)
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
    return times


def _thread_round_trip_ms(count: int, gap_s: float) -> list[float]:
    jobs: queue.SimpleQueue[bool] = queue.SimpleQueue()
    done: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def worker() -> None:
        while jobs.get():
            done.put(True)

    thread = threading.Thread(target=worker)
    thread.start()
    times: list[float] = []
    try:
        for _ in range(count):
            time.sleep(gap_s)
            started = time.perf_counter()
            jobs.put(True)
            done.get()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        jobs.put(False)
        thread.join()
    return times


def measure_commit(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    gap_s = args.commit_gap_ms / 1000
    back_to_back = _fdatasync_ms(directory / "fsync0.bin", args.commits, 0.0)
    paced = _fdatasync_ms(directory / "fsync1.bin", args.commits, gap_s)
    conn = _hibiki_db(directory / "commit.db")
    commit_ms: list[float] = []
    try:
        for row in _rows(args.commits, 1):
            time.sleep(gap_s)
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(INSERT, row)
            conn.execute("COMMIT")
            commit_ms.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    round_trips = _thread_round_trip_ms(args.commits, gap_s)
    return {
        "commits": args.commits,
        "gap_ms": args.commit_gap_ms,
        "fdatasync_ms_p50": statistics.median(back_to_back),
        "fdatasync_ms_p99": percentile(back_to_back, 0.99),
        "paced_fdatasync_ms_p50": statistics.median(paced),
        "paced_fdatasync_ms_p99": percentile(paced, 0.99),
        "paced_sqlite_commit_ms_p50": statistics.median(commit_ms),
        "paced_sqlite_commit_ms_p99": percentile(commit_ms, 0.99),
        "paced_thread_round_trip_ms_p50": statistics.median(round_trips),
        "paced_thread_round_trip_ms_p99": percentile(round_trips, 0.99),
    }


# insert ----------------------------------------------------------------------------------------
def _hibiki_db(path: Path) -> sqlite3.Connection:
    """hibiki's schema and writer pragmas (WAL, synchronous=FULL), with its 500 users and
    100 rooms in place, as bench_storage.py sets them up."""
    conn = connect(str(path), "FULL", writer=True)
    migrate(conn)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO users (id, name, password_hash, created_at) VALUES (?, ?, '', 0)",
        [(n + 1, f"user{n}") for n in range(500)],
    )
    conn.executemany(
        "INSERT INTO rooms (id, name, created_by, created_at) VALUES (?, ?, 1, 0)",
        [(n + 1, f"room{n}") for n in range(100)],
    )
    conn.execute("COMMIT")
    return conn


def _bare_db(path: Path) -> sqlite3.Connection:
    conn = connect(str(path), "FULL", writer=True)
    conn.execute(BARE_TABLE)
    return conn


def _rows(count: int, batch: int) -> list[tuple[Any, ...]]:
    """bench_storage.py's traffic as rows with ids and per-room seqs assigned."""
    traffic = Traffic(
        list(range(1, 501)),
        argparse.Namespace(rooms=100, senders=5, ids="time", clock_skew_ms=1000.0, seed=1),
    )
    rows: list[tuple[Any, ...]] = []
    seqs: dict[str, int] = {}
    ts = int(time.time() * 1000)
    for start in range(0, count, batch):
        for m in traffic.batch(min(batch, count - start)):
            seq = seqs[m.room] = seqs.get(m.room, 0) + 1
            room_id = int(m.room.removeprefix("room")) + 1
            rows.append(
                (len(rows) + 1, room_id, seq, m.user_id, m.user_name, m.text, ts, m.client_id)
            )
    return rows


def _insert_rate(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], batch: int) -> float:
    elapsed = 0.0
    try:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, chunk)
            conn.execute("COMMIT")
            elapsed += time.perf_counter() - started
        stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        conn.close()
    if stored != len(rows):
        raise SystemExit(f"insert: {stored} rows stored, expected {len(rows)}")
    return len(rows) / elapsed


def measure_insert(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    rows = _rows(args.messages, args.batch)
    hibiki: list[float] = []
    bare: list[float] = []
    for round_ in range(args.rounds):
        hibiki.append(_insert_rate(_hibiki_db(directory / f"hibiki{round_}.db"), rows, args.batch))
        bare.append(_insert_rate(_bare_db(directory / f"bare{round_}.db"), rows, args.batch))
    return {
        "messages": args.messages,
        "batch": args.batch,
        "rounds": args.rounds,
        "hibiki_schema_msg_per_s": statistics.median(hibiki),
        "bare_table_msg_per_s": statistics.median(bare),
    }


def report(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"Floors on this machine (SQLite {sqlite3.sqlite_version}), no hibiki code timed:", ""]
    if send := results.get("send"):
        lines.append(
            f"- send: {send['cpu_us_per_send']:.2f} µs CPU per loopback send() of a"
            f" {send['frame_bytes']}-byte frame (sender on CPU {send['sender_cpu']},"
            f" {send['reader']} reader on {send['reader_cpus']}); one sweep of"
            f" {send['receivers']:,} sends takes"
            f" p50 {send['sweep_ms_p50']:.2f} ms, p99 {send['sweep_ms_p99']:.2f} ms"
        )
    if commit := results.get("commit"):
        lines.append(
            f"- commit: write+fdatasync of 4 KiB back to back p50 {commit['fdatasync_ms_p50']:.2f}"
            f" ms, p99 {commit['fdatasync_ms_p99']:.2f} ms; {commit['gap_ms']:g} ms apart p50"
            f" {commit['paced_fdatasync_ms_p50']:.2f} ms,"
            f" p99 {commit['paced_fdatasync_ms_p99']:.2f} ms; one-message SQLite commit (FULL,"
            f" WAL, hibiki's schema) {commit['gap_ms']:g} ms apart"
            f" p50 {commit['paced_sqlite_commit_ms_p50']:.2f} ms,"
            f" p99 {commit['paced_sqlite_commit_ms_p99']:.2f} ms; a thread hand-off and back at"
            f" that pace p50 {commit['paced_thread_round_trip_ms_p50']:.3f} ms,"
            f" p99 {commit['paced_thread_round_trip_ms_p99']:.3f} ms ({commit['commits']} each)"
        )
    if insert := results.get("insert"):
        lines.append(
            f"- insert: group commit of {insert['batch']} rows, synchronous=FULL, median of"
            f" {insert['rounds']}: hibiki's schema {insert['hibiki_schema_msg_per_s']:,.0f} msg/s,"
            f" bare table with no secondary index {insert['bare_table_msg_per_s']:,.0f} msg/s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="hibiki-floor-") as tmp:
        if "send" in parts:
            results["send"] = measure_send(args)
        if "commit" in parts:
            results["commit"] = measure_commit(args, Path(tmp))
        if "insert" in parts:
            results["insert"] = measure_insert(args, Path(tmp))
    print(report(results))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

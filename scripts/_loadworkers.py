"""The Node.js worker processes that hold the load generator's sockets
(scripts/loadgen_node/worker.js), driven with one JSON command per line and one reply each."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import trio

NODE_DIR = Path(__file__).resolve().parent / "loadgen_node"
WORKER_JS = NODE_DIR / "worker.js"
FIREHOSE_JS = NODE_DIR / "firehose.js"


class WorkerError(RuntimeError):
    """A worker died, answered out of turn or did not answer in time."""


def node_binary() -> str | None:
    """The `node` executable, or None when Node.js is not installed."""
    return shutil.which("node")


class NodeWorker:
    """One worker process; commands are sent one at a time and each returns its reply."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self._buffer = b""
        self._lock = trio.Lock()

    @classmethod
    async def spawn(cls, name: str, config: dict[str, Any]) -> NodeWorker:
        node = node_binary()
        if node is None:
            raise WorkerError("node (Node.js >= 18) is required for the load generator")
        process = await trio.lowlevel.open_process(
            [node, str(WORKER_JS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        worker = cls(process, name)
        await worker.call({"cmd": "init", "config": config}, seconds=30)
        return worker

    @property
    def pid(self) -> int:
        return self.process.pid

    async def call(self, command: dict[str, Any], *, seconds: float = 30) -> dict[str, Any]:
        """Send `command` and return the worker's reply (a JSON object)."""
        async with self._lock:
            assert self.process.stdin is not None
            try:
                with trio.fail_after(seconds):
                    await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")
                    line = await self._read_line()
            except trio.TooSlowError:
                raise WorkerError(f"{self.name}: no answer to {command['cmd']!r}") from None
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise WorkerError(f"{self.name}: worker is gone ({exc})") from None
        reply: dict[str, Any] = json.loads(line)
        if reply.get("ev") == "error":
            raise WorkerError(f"{self.name}: {reply.get('error')}")
        return reply

    async def _read_line(self) -> bytes:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            data = await self.process.stdout.receive_some(1 << 20)
            if not data:
                raise WorkerError(f"{self.name}: worker exited (code {self.process.poll()})")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    async def close(self) -> None:
        """Ask the worker to quit; kill it if it does not within a few seconds."""
        with trio.move_on_after(5):
            with contextlib.suppress(WorkerError):
                await self.call({"cmd": "quit"}, seconds=5)
            await self.process.wait()
        if self.process.poll() is None:
            self.process.kill()
            with trio.move_on_after(5):
                await self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                await stream.aclose()

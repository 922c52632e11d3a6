"""The load generator's core: a session of Node workers holding receiver and sender connections,
and phases of sending (closed or open loop) measured into one JSON-ready report."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import trio
from _loadplan import PATHS, Plan, Target
from _loadstats import (
    Histogram,
    cpu_seconds,
    cpu_split,
    group_cpu_seconds,
    machine_busy_seconds,
    rss_kib,
    self_cpu_seconds,
)
from _loadworkers import NodeWorker

CLIENT_LIMITED = 0.90  # share of a core (per worker) or of all the client's cores
TICK = 1.0


@dataclass(frozen=True)
class Phase:
    """One measured stretch of sending. `rate` is the total offered messages/s (open loop);
    `window` the messages in flight per sender (closed loop). Without `stagger` every sender of
    an open loop sends its first message at once; with it, sender i of n starts i/n of a
    period (1 / its rate) late, so many slow senders offer evenly spaced messages in total."""

    mode: str = "closed"
    window: int = 32
    rate: float = 0.0
    duration: float = 10.0
    messages: int | None = None
    drain: float = 10.0
    max_inflight: int = 100_000
    stagger: bool = False  # open loop: spread the senders' first sends evenly over one period

    def __post_init__(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError("mode is 'closed' or 'open'")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("open loop needs a rate > 0")
        if self.mode == "closed" and self.window < 1:
            raise ValueError("closed loop needs a window >= 1")


@dataclass(frozen=True)
class SessionOptions:
    """`server_pid` and `server_pids` are the server's processes (CPU and RSS summed over all of
    them); `extra_pids` other processes whose CPU the run also costs (a redis-server)."""

    workers: int = 1
    sample_every: int = 16
    text_size: int = 64
    connect_concurrency: int = 200
    server_pid: int | None = None
    label: str = ""
    progress: bool = True
    server_pids: tuple[int, ...] = ()
    extra_pids: tuple[int, ...] = ()

    def all_server_pids(self) -> tuple[int, ...]:
        first = () if self.server_pid is None else (self.server_pid,)
        return tuple(dict.fromkeys((*first, *self.server_pids)))


Snapshot = dict[str, Any]


def _sum_stats(replies: Sequence[Snapshot]) -> Snapshot:
    total: Snapshot = {
        "deliveries": 0,
        "senderDeliveries": 0,
        "sent": 0,
        "echoed": 0,
        "inflight": 0,
        "errorFrames": 0,
        "closed": 0,
        "skipped": 0,
        "open": 0,
        "maxLagMs": 0.0,
        "sentPerRoom": {},
        "errors": [],
        "targetDeliveries": [],
    }
    for reply in replies:
        for key in ("deliveries", "senderDeliveries", "sent", "echoed", "inflight"):
            total[key] += reply[key]
        for key in ("errorFrames", "closed", "skipped", "open"):
            total[key] += reply[key]
        total["maxLagMs"] = max(total["maxLagMs"], reply["maxLagMs"])
        for room, n in reply["sentPerRoom"].items():
            total["sentPerRoom"][room] = total["sentPerRoom"].get(room, 0) + n
        total["errors"].extend(reply["errors"])
        _add_per_target(total["targetDeliveries"], reply.get("targetDeliveries", []))
    return total


def _add_per_target(into: list[int], counts: Sequence[int]) -> None:
    for i, n in enumerate(counts):
        if i < len(into):
            into[i] += n
        else:
            into.append(n)


def _at(values: Sequence[int], i: int) -> int:
    return values[i] if i < len(values) else 0


def _si(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


class LoadSession:
    """`async with LoadSession(target, plan, options) as s: report = await s.run_phase(p)`."""

    def __init__(self, target: Target, plan: Plan, options: SessionOptions) -> None:
        self.target = target
        self.plan = plan
        self.options = options
        self.receivers: list[NodeWorker] = []
        self.sender: NodeWorker | None = None
        self.connect_failed = 0
        self.connect_errors: list[str] = []
        self._cores = len(os.sched_getaffinity(0))
        self._last_replies: dict[str, Snapshot] = {}

    async def __aenter__(self) -> LoadSession:
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _worker_config(self) -> dict[str, Any]:
        return {
            "protocol": self.plan.protocol,
            "host": self.target.host,
            "port": self.target.port,
            "path": PATHS[self.plan.protocol],
            "targets": [{"host": t.host, "port": t.port} for t in self._targets()],
            "sampleEvery": self.options.sample_every,
            "textSize": self.options.text_size,
            "runId": self.plan.run_id,
        }

    def _targets(self) -> list[Target]:
        return self.plan.targets or [self.target]

    async def _start(self) -> None:
        config = self._worker_config()
        count = max(1, min(self.options.workers, len(self.plan.receivers)))
        for i in range(count):
            self.receivers.append(await NodeWorker.spawn(f"receivers-{i}", config))
        await self.add_receivers(self.plan.receivers)
        if self.plan.senders:
            self.sender = await NodeWorker.spawn("senders", config)
            await self._connect(self.sender, self.plan.senders)

    async def add_receivers(self, specs: Sequence[dict[str, Any]]) -> None:
        """Connect more receivers, spread over the receiver workers (also mid-session)."""
        if specs is not self.plan.receivers:
            self.plan.receivers.extend(specs)
            for spec in specs:
                room = spec["rooms"][0]
                self.plan.receivers_per_room[room] = self.plan.receivers_per_room.get(room, 0) + 1
        shares = [list(specs[i :: len(self.receivers)]) for i in range(len(self.receivers))]
        async with trio.open_nursery() as nursery:
            for worker, share in zip(self.receivers, shares, strict=True):
                nursery.start_soon(self._connect, worker, share)

    async def _connect(self, worker: NodeWorker, specs: list[dict[str, Any]]) -> None:
        if not specs:
            return
        reply = await worker.call(
            {
                "cmd": "connect",
                "conns": specs,
                "concurrency": self.options.connect_concurrency,
            },
            seconds=120 + len(specs) / 50,
        )
        self.connect_failed += reply["failed"]
        self.connect_errors.extend(reply["errors"])
        if reply["ok"] == 0:
            raise ConnectionError(f"{worker.name}: no connection succeeded: {reply['errors'][:3]}")

    def _workers(self) -> list[NodeWorker]:
        return [*self.receivers, *([self.sender] if self.sender else [])]

    async def ask_all(self, command: str) -> dict[str, Snapshot]:
        """Each worker's reply to `command`, asked of all of them at once."""
        replies: dict[str, Snapshot] = {}

        async def ask(worker: NodeWorker) -> None:
            replies[worker.name] = await worker.call({"cmd": command}, seconds=60)

        async with trio.open_nursery() as nursery:
            for worker in self._workers():
                nursery.start_soon(ask, worker)
        return replies

    async def _all(self, command: str) -> tuple[Snapshot, Snapshot]:
        """(receivers' sum, senders' sum) of `stats` or `report` over all workers."""
        replies = await self.ask_all(command)
        self._last_replies = replies
        recv = _sum_stats([replies[w.name] for w in self.receivers])
        send = _sum_stats([replies[self.sender.name]] if self.sender else [])
        # Senders that also receive (chatty rooms) count deliveries in the senders' worker.
        recv["deliveries"] += send["deliveries"]
        _add_per_target(recv["targetDeliveries"], send["targetDeliveries"])
        return recv, send

    def _cpu(self) -> dict[str, float]:
        pids = [w.pid for w in self._workers()]
        out = {w.name: cpu_seconds(w.pid) for w in self._workers()}
        out["_client"] = group_cpu_seconds(pids) + self_cpu_seconds()
        user = system = 0.0
        for pid in self.options.all_server_pids():
            u, s = cpu_split(pid)
            user, system = user + u, system + s
        out["_server"], out["_server_sys"] = user + system, system
        out["_extra"] = group_cpu_seconds(self.options.extra_pids)
        out["_machine"] = machine_busy_seconds()
        return out

    async def run_phase(self, phase: Phase) -> dict[str, Any]:
        """Send for `phase.duration` (or `phase.messages`), drain, and report."""
        if self.sender is None:
            raise ValueError("this session has no senders")
        await self.ask_all("reset")
        recv0, send0 = await self._all("stats")
        cpu0 = self._cpu()
        t0 = trio.current_time()
        senders = len(self.plan.senders)
        command: dict[str, Any] = {
            "cmd": "start",
            "mode": phase.mode,
            "window": phase.window,
            "rate": phase.rate / senders,
            "maxInflight": phase.max_inflight,
            "stagger": phase.stagger,
        }
        if phase.messages is not None:
            command["messages"] = send0["sent"] // senders + math.ceil(phase.messages / senders)
        await self.sender.call(command)
        rss_max = await self._watch(phase, t0, recv0, send0, cpu0)
        send1 = _sum_stats([await self.sender.call({"cmd": "stop"})])
        t1 = trio.current_time()
        cpu1 = self._cpu()
        recv1, _ = await self._all("stats")
        sent_per_room = {
            room: n - send0["sentPerRoom"].get(room, 0) for room, n in send1["sentPerRoom"].items()
        }
        expected = self.plan.expected_deliveries(sent_per_room)
        recv2 = await self._drain(phase, recv0, expected)
        t2 = trio.current_time()
        cpu2 = self._cpu()
        recv3, send3 = await self._all("report")
        return self._report(
            phase,
            windows=(t1 - t0, t2 - t0),
            stats=(recv0, send0, recv1, send1, recv2, recv3, send3),
            cpu=(cpu0, cpu1, cpu2),
            expected=expected,
            rss_max=rss_max,
        )

    async def _watch(
        self, phase: Phase, t0: float, recv0: Snapshot, send0: Snapshot, cpu0: dict[str, float]
    ) -> int:
        rss_max = 0
        last_t, last_cpu, last_recv = t0, cpu0, recv0
        limit = None if phase.messages is None else send0["sent"] + phase.messages
        while True:
            await trio.sleep(min(TICK, max(0.0, t0 + phase.duration - trio.current_time())))
            now = trio.current_time()
            recv, send = await self._all("stats")
            cpu = self._cpu()
            if self.options.all_server_pids():
                rss_max = max(rss_max, self._server_rss())
            if self.options.progress:
                sent = send["sent"] - send0["sent"]
                errors = recv["errorFrames"] + send["errorFrames"] + recv["closed"] + send["closed"]
                self._progress(now - t0, now - last_t, recv, last_recv, sent, errors, cpu, last_cpu)
            last_t, last_cpu, last_recv = now, cpu, recv
            if now - t0 >= phase.duration:
                break
            if limit is not None and send["sent"] >= limit and send["inflight"] <= 0:
                break
            if limit is not None and phase.mode == "open" and send["sent"] >= limit:
                break
        return rss_max

    def _progress(
        self,
        elapsed: float,
        dt: float,
        recv: Snapshot,
        last_recv: Snapshot,
        sent: int,
        errors: int,
        cpu: dict[str, float],
        last_cpu: dict[str, float],
    ) -> None:
        dt = max(dt, 1e-6)
        rate = (recv["deliveries"] - last_recv["deliveries"]) / dt
        srv = (cpu["_server"] - last_cpu["_server"]) / dt
        cli = (cpu["_client"] - last_cpu["_client"]) / dt
        line = (
            f"[{self.options.label or self.plan.protocol}] {elapsed:5.1f}s "
            f"sent {_si(sent)}  deliveries {_si(rate)}/s  "
            f"server cpu {srv:4.0%}  client cpu {cli:4.0%}  errors {errors}"
        )
        print(line, file=sys.stderr, flush=True)

    def _server_rss(self) -> int:
        return sum(rss_kib(pid) for pid in self.options.all_server_pids())

    async def measure_only(self, duration: float) -> dict[str, Any]:
        """Count what the receivers get for `duration` with nothing sent (the firehose test)."""
        await self.ask_all("go")
        await trio.sleep(0.5)  # let the streams start before the baseline
        recv0, _ = await self._all("stats")
        cpu0 = self._cpu()
        t0 = last_t = trio.current_time()
        last_recv, last_cpu = recv0, cpu0
        while (now := trio.current_time()) - t0 < duration:
            await trio.sleep(min(TICK, t0 + duration - now))
            recv, _ = await self._all("stats")
            cpu = self._cpu()
            now = trio.current_time()
            if self.options.progress:
                errors = recv["closed"] + recv["errorFrames"]
                self._progress(now - t0, now - last_t, recv, last_recv, 0, errors, cpu, last_cpu)
            last_t, last_recv, last_cpu = now, recv, cpu
        window = last_t - t0
        got = last_recv["deliveries"] - recv0["deliveries"]
        client = last_cpu["_client"] - cpu0["_client"]
        return {
            "label": self.options.label,
            "receivers": len(self.plan.receivers),
            "duration_s": round(window, 3),
            "deliveries": got,
            "deliveries_per_s": round(got / window, 1),
            "client_cpu_s": round(client, 3),
            "client_cores": self._cores,
            "client_cpu_util": round(client / (window * self._cores), 3),
            "client_worker_cpu_util": {
                w.name: round((last_cpu[w.name] - cpu0[w.name]) / window, 3)
                for w in self._workers()
            },
            "client_cpu_us_per_delivery": round(client * 1e6 / got, 4) if got else None,
            "deliveries_per_client_cpu_s": round(got / client, 1) if client else None,
            "source_cpu_util": round((last_cpu["_server"] - cpu0["_server"]) / window, 3),
            "errors": {"closed": last_recv["closed"], "messages": last_recv["errors"][:10]},
        }

    async def _drain(self, phase: Phase, recv0: Snapshot, expected: int) -> Snapshot:
        """Wait until every receiver has what was sent, or progress stops, or `phase.drain`."""
        deadline = trio.current_time() + phase.drain
        last, last_change = -1, trio.current_time()
        while True:
            recv, _ = await self._all("stats")
            got = recv["deliveries"] - recv0["deliveries"]
            now = trio.current_time()
            if got >= expected or now >= deadline:
                return recv
            if got != last:
                last, last_change = got, now
            elif now - last_change > 2.0:
                return recv
            await trio.sleep(0.05)

    def _report(
        self,
        phase: Phase,
        *,
        windows: tuple[float, float],
        stats: tuple[Snapshot, ...],
        cpu: tuple[dict[str, float], ...],
        expected: int,
        rss_max: int,
    ) -> dict[str, Any]:
        recv0, send0, recv1, send1, recv2, recv3, send3 = stats
        cpu0, cpu1, cpu2 = cpu
        window, total_time = windows
        latency, rtt = Histogram(), Histogram()
        for reply in self._last_replies.values():
            latency.merge(reply["latency"])
            rtt.merge(reply["rtt"])
        sent = send1["sent"] - send0["sent"]
        in_window = recv1["deliveries"] - recv0["deliveries"]
        delivered = recv2["deliveries"] - recv0["deliveries"]
        server_cpu = cpu2["_server"] - cpu0["_server"]
        client_cpu = cpu1["_client"] - cpu0["_client"]
        per_worker = {
            w.name: round((cpu1[w.name] - cpu0[w.name]) / window, 3) for w in self._workers()
        }
        client_util = client_cpu / (window * self._cores)
        server_in_window = cpu1["_server"] - cpu0["_server"]
        extra_in_window = cpu1["_extra"] - cpu0["_extra"]
        other = (cpu1["_machine"] - cpu0["_machine"]) - client_cpu - server_in_window
        other -= extra_in_window
        pid = self.options.server_pid or next(iter(self.options.all_server_pids()), None)
        return {
            "label": self.options.label,
            "protocol": self.plan.protocol,
            "target": f"{self.target.host}:{self.target.port}",
            "receivers": self.plan.receiving(),
            "rooms": len(self.plan.rooms),
            "senders": len(self.plan.senders),
            "phase": asdict(phase),
            "duration_s": round(window, 3),
            "sent": sent,
            "messages_per_s": round(sent / window, 1),
            "deliveries": delivered,
            "expected_deliveries": expected,
            "missing_deliveries": expected - delivered,
            "deliveries_per_s": round(in_window / window, 1),
            "sender_deliveries": send3["senderDeliveries"] - send0["senderDeliveries"],
            "latency_ms": latency.summary_ms(),
            "rtt_ms": rtt.summary_ms(),
            "errors": {
                "error_frames": recv3["errorFrames"] + send3["errorFrames"],
                "closed": recv3["closed"] + send3["closed"],
                "connect_failed": self.connect_failed,
                "skipped_sends": send1["skipped"],
                "max_send_lag_ms": round(send1["maxLagMs"], 3),
                "messages": (self.connect_errors + recv3["errors"] + send3["errors"])[:10],
            },
            "server_pid": pid,
            "server_cpu_s": round(server_cpu, 3) if pid else None,
            "server_cpu_util": round(server_cpu / total_time, 3) if pid else None,
            "server_cpu_sys_share": (
                round((cpu2["_server_sys"] - cpu0["_server_sys"]) / server_cpu, 3)
                if pid and server_cpu
                else None
            ),
            "server_cpu_us_per_delivery": (
                round(server_cpu * 1e6 / delivered, 4) if pid and delivered else None
            ),
            "server_rss_kib": self._server_rss() if pid else None,
            "server_rss_max_kib": rss_max if pid else None,
            "client_cpu_s": round(client_cpu, 3),
            "client_cores": self._cores,
            "client_cpu_util": round(client_util, 3),
            "client_worker_cpu_util": per_worker,
            "client_cpu_us_per_delivery": (
                round(client_cpu * 1e6 / in_window, 4) if in_window else None
            ),
            "other_cpu_util": round(other / window, 3),
            "client_limited": client_util > CLIENT_LIMITED
            or any(v > CLIENT_LIMITED for v in per_worker.values()),
            **self._cpu_totals(server_cpu, cpu2["_extra"] - cpu0["_extra"], delivered),
            **self._by_target(recv0, recv3),
        }

    def _cpu_totals(self, server_cpu: float, extra_cpu: float, delivered: int) -> dict[str, Any]:
        """The server's processes and the extra ones (a redis-server) together, per delivery."""
        if not self.options.all_server_pids():
            return {"server_pids": [], "extra_pids": list(self.options.extra_pids)}
        total = server_cpu + extra_cpu
        return {
            "server_pids": list(self.options.all_server_pids()),
            "extra_pids": list(self.options.extra_pids),
            "extra_cpu_s": round(extra_cpu, 3),
            "total_cpu_s": round(total, 3),
            "total_cpu_us_per_delivery": round(total * 1e6 / delivered, 4) if delivered else None,
            "deliveries_per_cpu_s": round(delivered / total, 1) if total else None,
        }

    def _by_target(self, recv0: Snapshot, recv3: Snapshot) -> dict[str, Any]:
        """Deliveries and latency per server process: the senders' own (same node) and the
        others (cross node: every delivery there went through the other process's bus)."""
        targets = self._targets()
        before, after = recv0["targetDeliveries"], recv3["targetDeliveries"]
        hists = [Histogram() for _ in targets]
        for name in (w.name for w in self._workers()):
            for hist, data in zip(hists, self._last_replies[name]["targetLatency"], strict=True):
                hist.merge(data)
        cross = Histogram()
        for hist in hists[1:]:
            cross.merge_histogram(hist)
        rows = [
            {
                "target": f"{t.host}:{t.port}",
                "node": "same" if i == 0 else "cross",
                "deliveries": _at(after, i) - _at(before, i),
                "latency_ms": hists[i].summary_ms(),
            }
            for i, t in enumerate(targets)
        ]
        return {
            "targets": rows,
            "latency_same_node_ms": hists[0].summary_ms(),
            "latency_cross_node_ms": cross.summary_ms() if len(targets) > 1 else None,
        }

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for worker in self._workers():
                    nursery.start_soon(worker.close)
        self.receivers, self.sender = [], None


async def run_load(
    target: Target,
    plan_factory: Callable[[], Awaitable[Plan]],
    phase: Phase,
    options: SessionOptions,
) -> dict[str, Any]:
    """Plan, connect, run one phase, close: the whole of a `loadgen.py` run."""
    plan = await plan_factory()
    async with LoadSession(target, plan, options) as session:
        return await session.run_phase(phase)

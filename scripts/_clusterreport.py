"""The cross-process benchmark's runs as medians, a Markdown table and its ratios: hibiki ÷ peer
in deliveries per CPU-second (every server process and redis-server counted), the same kind on
several processes ÷ on one in CPU per delivery, and cross-node minus same-node p99."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from _benchreport import NOISY, _fmt, _median

Run = dict[str, Any]
Row = dict[str, Any]
BASELINE = "hibiki"


def _latency(run: Run, key: str, q: str) -> float | None:
    value = run.get(key)
    return None if value is None else value.get(q)


def summarise_cluster(runs: Sequence[Run]) -> list[Row]:
    """One row per (mode, workload, server, processes): medians over the rounds."""
    groups: dict[tuple[str, str, str, int], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run["mode"], run["workload"], run["server"], run["processes"])].append(run)
    rows = []
    for (mode, workload, server, processes), group in groups.items():
        rows.append(
            {
                "mode": mode,
                "workload": workload,
                "server": server,
                "processes": processes,
                "case": f"{server} x{processes}",
                "receivers": group[0]["receivers"],
                "senders": group[0]["senders"],
                "runs": len(group),
                "deliveries_per_s": _median(r["deliveries_per_s"] for r in group),
                "us_per_delivery": _median(r.get("total_cpu_us_per_delivery") for r in group),
                "deliveries_per_cpu_s": _median(r.get("deliveries_per_cpu_s") for r in group),
                "server_us_per_delivery": _median(
                    r.get("server_cpu_us_per_delivery") for r in group
                ),
                "redis_share": _median(
                    r["extra_cpu_s"] / r["total_cpu_s"] if r.get("total_cpu_s") else None
                    for r in group
                ),
                "p50_ms": _median(_latency(r, "latency_ms", "p50") for r in group),
                "p99_ms": _median(_latency(r, "latency_ms", "p99") for r in group),
                "same_p50_ms": _median(_latency(r, "latency_same_node_ms", "p50") for r in group),
                "same_p99_ms": _median(_latency(r, "latency_same_node_ms", "p99") for r in group),
                "cross_p50_ms": _median(_latency(r, "latency_cross_node_ms", "p50") for r in group),
                "cross_p99_ms": _median(_latency(r, "latency_cross_node_ms", "p99") for r in group),
                "client_limited": any(r["client_limited"] for r in group),
                "other_cpu_util": _median(r.get("other_cpu_util") for r in group),
                "missing": max(r["missing_deliveries"] for r in group),
                "errors": max(r["errors"]["error_frames"] + r["errors"]["closed"] for r in group),
            }
        )
    return rows


def peer_ratios(rows: Sequence[Row]) -> list[Row]:
    """hibiki ÷ peer, deliveries per CPU-second, for the same workload and process count."""
    by_key = {(r["mode"], r["workload"], r["server"], r["processes"]): r for r in rows}
    out = []
    for row in rows:
        base = by_key.get((row["mode"], row["workload"], BASELINE, row["processes"]))
        if row["server"] == BASELINE or base is None:
            continue
        if base["us_per_delivery"] and row["us_per_delivery"]:
            ratio = row["us_per_delivery"] / base["us_per_delivery"]
            out.append({**_key(row), "peer": row["server"], "ratio": ratio})
    return out


def process_ratios(rows: Sequence[Row]) -> list[Row]:
    """CPU per delivery on several processes ÷ on one, and cross-node minus same-node p99."""
    by_key = {(r["mode"], r["workload"], r["server"], r["processes"]): r for r in rows}
    out = []
    for row in rows:
        one = by_key.get((row["mode"], row["workload"], row["server"], 1))
        if row["processes"] == 1 or one is None:
            continue
        cpu = (
            row["us_per_delivery"] / one["us_per_delivery"]
            if row["us_per_delivery"] and one["us_per_delivery"]
            else None
        )
        same, cross = row["same_p99_ms"], row["cross_p99_ms"]
        out.append(
            {
                **_key(row),
                "server": row["server"],
                "processes": row["processes"],
                "cpu_ratio": cpu,
                "cross_minus_same_p99_ms": None if same is None or cross is None else cross - same,
                "one_process_p99_ms": one["p99_ms"],
            }
        )
    return out


def _key(row: Row) -> Row:
    return {"mode": row["mode"], "workload": row["workload"], "processes": row["processes"]}


def _notes(r: Row) -> str:
    notes = []
    if r["client_limited"]:
        notes.append("client-limited")
    if (r.get("other_cpu_util") or 0) > NOISY:
        notes.append(f"rest of the machine busy: {r['other_cpu_util']:.0%} of a CPU")
    if r["missing"]:
        notes.append(f"{r['missing']} not delivered by the drain deadline")
    if r["errors"]:
        notes.append(f"{r['errors']} errors")
    if r["server"] == BASELINE:
        notes.append("persists every message")
    return ", ".join(notes)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def markdown_cluster(
    rows: Sequence[Row], header: str, skipped: Sequence[str] = (), *, floor_us: float | None = None
) -> str:
    """The table; with `floor_us` (the run's bare send floor) each row's µs per delivery is also
    given as a multiple of it."""
    lines = [
        header,
        "",
        "µs = CPU per delivery of every server process and redis-server together; same / cross:",
        "receivers on the senders' process / on another process (only with several); ÷ floor:",
        "µs per delivery over the bare send() floor measured in the same run.",
        "",
        "| mode | workload | server | processes | deliveries/s | µs/delivery | ÷ floor "
        "| deliveries per CPU-s | redis share | same p50 | same p99 | cross p50 | cross p99 "
        "| notes |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- |",
    ]
    order = {kind: i for i, kind in enumerate(("hibiki", "socketio", "node-socketio"))}
    for r in sorted(
        rows,
        key=lambda r: (r["mode"], r["workload"], order.get(r["server"], 9), r["processes"]),
    ):
        lines.append(
            f"| {r['mode']} | {r['workload']} | {r['server']} | {r['processes']} "
            f"| {_fmt(r['deliveries_per_s'], 0)} | {_fmt(r['us_per_delivery'], 3)} "
            f"| {_over_floor(r['us_per_delivery'], floor_us)} "
            f"| {_fmt(r['deliveries_per_cpu_s'], 0)} | {_share(r['redis_share'])} "
            f"| {_fmt(r['same_p50_ms'])} | {_fmt(r['same_p99_ms'])} "
            f"| {_fmt(r['cross_p50_ms'])} | {_fmt(r['cross_p99_ms'])} | {_notes(r)} |"
        )
    peers = peer_ratios(rows)
    if peers:
        lines += ["", "hibiki ÷ peer, deliveries per CPU-second (medians):", ""]
        lines += ["| mode | workload | processes | peer | ratio |"]
        lines += ["| --- | --- | ---: | --- | ---: |"]
        for x in peers:
            lines.append(
                f"| {x['mode']} | {x['workload']} | {x['processes']} | {x['peer']} "
                f"| {x['ratio']:.1f}x |"
            )
    scaling = process_ratios(rows)
    if scaling:
        lines += ["", "Several processes against one, same server (medians):", ""]
        lines += [
            "| mode | workload | server | processes | CPU per delivery ÷ 1 process "
            "| cross p99 minus same p99 ms | 1-process p99 ms |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for x in scaling:
            ratio = "-" if x["cpu_ratio"] is None else f"{x['cpu_ratio']:.2f}x"
            lines.append(
                f"| {x['mode']} | {x['workload']} | {x['server']} | {x['processes']} | {ratio} "
                f"| {_fmt(x['cross_minus_same_p99_ms'])} | {_fmt(x['one_process_p99_ms'])} |"
            )
    if skipped:
        lines += ["", "Not run:", "", *(f"- {s}" for s in skipped)]
    return "\n".join(lines) + "\n"


def _over_floor(us: float | None, floor_us: float | None) -> str:
    if us is None or not floor_us:
        return "-"
    return f"{us / floor_us:.2f}x"

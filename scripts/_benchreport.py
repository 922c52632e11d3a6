"""Turn the fan-out benchmark's runs into medians, a Markdown table, ratios and PNG plots."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

Run = dict[str, Any]
BASELINE = "hibiki"
ON_POSTGRESQL = "hibiki-pg"  # hibiki itself on the other backend: compared apart, not a peer
NOISY = 0.25  # CPU used by other processes of the machine during a run, in cores


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (mode, workload, server): medians over the rounds."""
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run["mode"], run["workload"], run["server"])].append(run)
    rows = []
    for (mode, workload, server), group in groups.items():
        first = group[0]
        rows.append(
            {
                "mode": mode,
                "workload": workload,
                "server": server,
                "receivers": first["receivers"],
                "rooms": first["rooms"],
                "senders": first["senders"],
                "runs": len(group),
                "deliveries_per_s": _median(r["deliveries_per_s"] for r in group),
                "us_per_delivery": _median(r["server_cpu_us_per_delivery"] for r in group),
                # the server's processes plus the extra ones (PostgreSQL's backends)
                "total_us_per_delivery": _median(r.get("total_cpu_us_per_delivery") for r in group),
                "p50_ms": _median(r["latency_ms"]["p50"] for r in group),
                "p99_ms": _median(r["latency_ms"]["p99"] for r in group),
                "server_cpu_util": _median(r["server_cpu_util"] for r in group),
                "client_cpu_util": _median(r["client_cpu_util"] for r in group),
                "client_limited": any(r["client_limited"] for r in group),
                "other_cpu_util": _median(r.get("other_cpu_util") for r in group),
                "offered_deliveries_per_s": _median(
                    r.get("offered_deliveries_per_s") for r in group
                ),
                "missing": max(r["missing_deliveries"] for r in group),
                "errors": max(r["errors"]["error_frames"] + r["errors"]["closed"] for r in group),
            }
        )
    return rows


def ratios(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """hibiki / peer in deliveries per server-CPU-second (= peer µs / hibiki µs per delivery)."""
    by_key = {(r["mode"], r["workload"], r["server"]): r for r in rows}
    out = []
    for row in rows:
        if row["server"] in (BASELINE, ON_POSTGRESQL):
            continue
        base = by_key.get((row["mode"], row["workload"], BASELINE))
        if base is None or not base["us_per_delivery"] or not row["us_per_delivery"]:
            continue
        out.append(
            {
                "mode": row["mode"],
                "workload": row["workload"],
                "peer": row["server"],
                "ratio": row["us_per_delivery"] / base["us_per_delivery"],
            }
        )
    return out


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def backend_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """hibiki on PostgreSQL against hibiki on SQLite, per workload run on both (ratios pg/sqlite;
    CPU counts the PostgreSQL backends serving the run's database with hibiki's own)."""
    by_key = {(r["mode"], r["workload"], r["server"]): r for r in rows}
    lines = []
    for row in rows:
        base = by_key.get((row["mode"], row["workload"], BASELINE))
        if row["server"] != ON_POSTGRESQL or base is None:
            continue
        lines.append(
            f"| {row['mode']} | {row['workload']} "
            f"| {_ratio(row['deliveries_per_s'], base['deliveries_per_s'])} "
            f"| {_ratio(row['us_per_delivery'], base['us_per_delivery'])} "
            f"| {_ratio(row['total_us_per_delivery'], base['total_us_per_delivery'])} "
            f"| {_ratio(row['p99_ms'], base['p99_ms'])} |"
        )
    if not lines:
        return []
    return [
        "",
        "hibiki on PostgreSQL / on SQLite (medians; CPU with PostgreSQL's backends in the last):",
        "",
        "| mode | workload | deliveries/s | hibiki µs/delivery | + PostgreSQL µs/delivery | p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *lines,
    ]


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100_000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def markdown(rows: Sequence[dict[str, Any]], header: str, floor_us: float | None = None) -> str:
    """The table of `rows`; with `floor_us` (the bare send floor of the same run, µs per
    `send()`), a column of each row's server µs per delivery ÷ that floor."""
    lines = [
        header,
        "",
        "| mode | workload | server | deliveries/s | server µs/delivery | ÷ send floor "
        "| p50 ms | p99 ms | server CPU | client CPU | notes |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in sorted(rows, key=lambda r: (r["mode"], r["receivers"], r["rooms"], r["senders"])):
        notes = []
        if r.get("offered_deliveries_per_s"):
            notes.append(f"offered {_fmt(r['offered_deliveries_per_s'], 0)}/s")
        if r["client_limited"]:
            notes.append("client-limited")
        if (r.get("other_cpu_util") or 0) > NOISY:
            notes.append(f"rest of the machine busy: {r['other_cpu_util']:.0%} of a CPU")
        if r["missing"]:
            notes.append(f"{r['missing']} not delivered by the drain deadline")
        if r["errors"]:
            notes.append(f"{r['errors']} errors")
        util = (
            f"{r['server_cpu_util']:.0%}" if r["server_cpu_util"] is not None else "-",
            f"{r['client_cpu_util']:.0%}" if r["client_cpu_util"] is not None else "-",
        )
        lines.append(
            f"| {r['mode']} | {r['workload']} | {r['server']} | {_fmt(r['deliveries_per_s'], 0)} "
            f"| {_fmt(r['us_per_delivery'], 3)} | {_ratio(r['us_per_delivery'], floor_us)} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} "
            f"| {util[0]} | {util[1]} | {', '.join(notes)} |"
        )
    found = ratios(rows)
    if found:
        lines += [
            "",
            "hibiki / peer, deliveries per server-CPU-second (medians):",
            "",
            "| mode | workload | peer | ratio |",
            "| --- | --- | --- | ---: |",
        ]
        for x in found:
            lines.append(f"| {x['mode']} | {x['workload']} | {x['peer']} | {x['ratio']:.1f}x |")
    lines += backend_lines(rows)
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """deliveries/s and p99 vs N (one-room flood workloads), one line per server and senders."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one_room = [r for r in rows if r["mode"] == "flood" and r["rooms"] == 1]
    if not one_room:
        return []
    written = []
    for key, ylabel, name in (
        ("deliveries_per_s", "deliveries/s", "deliveries.png"),
        ("p99_ms", "p99 send→receive latency (ms)", "p99.png"),
    ):
        fig, ax = plt.subplots(figsize=(9, 4.5))
        series: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
        for r in one_room:
            if r[key] is not None:
                series[(r["server"], r["senders"])].append((r["receivers"], r[key]))
        for (server, senders), points in sorted(series.items()):
            points.sort()
            ax.plot(*zip(*points, strict=True), marker="o", label=f"{server}, {senders} sender(s)")
        ax.set_title(f"flood (closed loop), one room: {ylabel}", fontsize=10)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("receivers in one room (N)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        # Beside the axes, so it never hides a point whatever the figures are.
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_chatty(
    rows: Sequence[dict[str, Any]], out_dir: Path, floor_us: float | None
) -> list[Path]:
    """chatty.png: per server, CPU per delivery (with the run's bare send floor) and p50/p99."""
    chatty = [r for r in rows if r["mode"] == "chatty"]  # in run order: hibiki, then the peers
    if not chatty:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["server"] for r in chatty]
    xs = list(range(len(chatty)))
    fig, (cpu, lat) = plt.subplots(1, 2, figsize=(10, 4.2))
    cpu.bar(xs, [r["us_per_delivery"] or 0 for r in chatty], color="tab:blue")
    for x, r in zip(xs, chatty, strict=True):  # what each achieved, or that it delivered nothing
        achieved = f"{_fmt(r['deliveries_per_s'], 0)}/s" if r["us_per_delivery"] else "none"
        cpu.annotate(achieved, (x, r["us_per_delivery"] or 0), ha="center", va="bottom", fontsize=8)
    if floor_us:
        cpu.axhline(floor_us, color="black", linestyle="--", linewidth=1)
        cpu.annotate(
            f"bare send() {floor_us:.2f} µs",
            (xs[-1] + 0.4, floor_us),
            ha="right",
            va="bottom",
            fontsize=8,
        )
    cpu.set_ylabel("server CPU µs per delivery (deliveries/s achieved)")
    width = 0.38
    lat.bar([x - width / 2 for x in xs], [r["p50_ms"] or 0 for r in chatty], width, label="p50")
    lat.bar([x + width / 2 for x in xs], [r["p99_ms"] or 0 for r in chatty], width, label="p99")
    lat.set_ylabel("send→receive latency (ms)")
    lat.legend(fontsize=8)
    for ax in (cpu, lat):
        ax.set_xticks(xs, names)
        ax.grid(True, axis="y", alpha=0.3)
    first = chatty[0]
    fig.suptitle(
        f"{first['workload']}: every connection sends, open loop, "
        f"{_fmt(first['offered_deliveries_per_s'], 0)} deliveries/s offered",
        fontsize=10,
    )
    fig.tight_layout()
    path = out_dir / "chatty.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]

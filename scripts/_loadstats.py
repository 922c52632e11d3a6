"""Measurement helpers for the load tools: latency histograms from the Node workers, and CPU
seconds / RSS of processes read from /proc."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Histogram:
    """Counts in logarithmic buckets (`per_octave` per power of two) of microsecond values."""

    per_octave: int = 32
    counts: dict[int, float] = field(default_factory=dict)
    max_us: float = 0.0
    n: int = 0

    def merge(self, data: dict[str, Any]) -> None:
        """Add one worker's histogram (`toJSON()` of scripts/loadgen_node/histogram.js)."""
        self.per_octave = int(data["perOctave"])
        for index, count in data["buckets"]:
            self.counts[int(index)] = self.counts.get(int(index), 0.0) + count
        self.max_us = max(self.max_us, float(data["max"]))
        self.n += int(data["n"])

    def merge_histogram(self, other: Histogram) -> None:
        """Add another histogram's counts (same `per_octave`)."""
        self.per_octave = other.per_octave
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0.0) + count
        self.max_us = max(self.max_us, other.max_us)
        self.n += other.n

    def percentile(self, q: float) -> float | None:
        """The value (µs) below which a fraction `q` of the samples lie; None when empty."""
        total = sum(self.counts.values())
        if total == 0:
            return None
        rank = q * total
        seen = 0.0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                # Geometric middle of the bucket, never above the exact maximum.
                return min(2 ** ((index + 0.5) / self.per_octave), self.max_us)
        return self.max_us

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value / 1000, 3)

        return {
            "p50": ms(self.percentile(0.50)),
            "p95": ms(self.percentile(0.95)),
            "p99": ms(self.percentile(0.99)),
            "max": ms(self.max_us) if self.n else None,
            "samples": self.n,
        }


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads) from /proc/PID/stat; zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads); 0.0 once it is gone."""
    return sum(cpu_split(pid))


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_KIB
    except (FileNotFoundError, ProcessLookupError):
        return 0


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine has been busy (all CPUs; idle and iowait excluded)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def group_cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def raise_fd_limit(wanted: int = 1_048_576) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (children inherit it); returns the new soft limit.

    An unprivileged process can only go up to the hard limit; root can raise the hard limit
    itself (up to /proc/sys/fs/nr_open).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            wanted = min(wanted, int(f.read()))
    except OSError:
        pass
    for target in (max(wanted, soft), hard):
        new_hard = max(hard, target) if hard != resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, new_hard))
            return target
        except (ValueError, OSError):
            continue
    return soft

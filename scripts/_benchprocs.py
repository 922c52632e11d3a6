"""What a server's processes hold, read from /proc: a supervisor's worker pids, open descriptors,
and the established TCP connections each process owns on a port (to see how the kernel spread
SO_REUSEPORT connections over the workers)."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from pathlib import Path

_ESTABLISHED = "01"


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (every thread's `children` list), sorted; [] once it is gone."""
    found: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return []
    for task in tasks:
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(found)


def fd_count(pid: int) -> int:
    """Open descriptors of `pid` (entries of /proc/PID/fd); 0 once it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return 0


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets `pid` holds open."""
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return inodes
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:  # closed between listdir and readlink
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def established_inodes(local_port: int) -> set[int]:
    """Inodes of the established IPv4/IPv6 TCP sockets whose local port is `local_port` (the
    server's side of each connection to it), from /proc/net/tcp{,6}."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] != _ESTABLISHED:
                        continue
                    if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                        inodes.add(int(fields[9]))
        except FileNotFoundError:
            continue
    return inodes


def connections_by_process(pids: Iterable[int], port: int) -> dict[int, int]:
    """For each pid, how many established connections to `port` it holds."""
    server_side = established_inodes(port)
    return {pid: len(socket_inodes(pid) & server_side) for pid in pids}


def cap_fd_limit(limit: int) -> int:
    """Set the soft RLIMIT_NOFILE to `limit` (at most the hard limit); children inherit it.
    Returns the soft limit now in force."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft

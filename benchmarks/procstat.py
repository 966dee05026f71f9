"""
What a server process tree costs, read from /proc: CPU seconds (user +
system, including reaped children) and memory (RSS and PSS from
smaps_rollup), summed over the process and all its descendants.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

_TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def tree(pid: int) -> Iterator[int]:
    """``pid`` and every live descendant."""
    stack = [pid]
    seen: set[int] = set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        yield p
        stack.extend(children(p))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the tree, counting children already reaped."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17.
        total += sum(int(x) for x in fields[11:15])
    return total / _TICK


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """
    User + system CPU of one thread of ``pid`` (default its main thread: a
    Twisted server's reactor thread); NaN once the process is gone.
    """
    try:
        with open(f"/proc/{pid}/task/{pid if tid is None else tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory_kib(pid: int) -> dict[str, int]:
    """RSS and PSS (KiB) of the tree, and how many processes it has."""
    rss = pss = count = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            count += 1
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return {"rss": rss, "pss": pss, "processes": count}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q * len(ordered) + 0.5)) - 1))
    return ordered[rank]

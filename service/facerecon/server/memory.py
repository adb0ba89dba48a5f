"""The memory budget for requests in progress: from a flag, or from the container's limit.

Derived budget = --memory-fraction × limit − the process's RSS once the model is loaded and
warm, where the limit is the cgroup's (v2 `memory.max`, v1 `memory.limit_in_bytes`) or,
outside a container or with no limit set, the machine's physical memory.
"""

from __future__ import annotations

import os
from pathlib import Path

MiB = 1 << 20
MIN_BUDGET = 256 * MiB  # a derived budget never goes below this (one ordinary request fits)
CGROUP = Path("/sys/fs/cgroup")


def cgroup_memory_limit(root: Path = CGROUP) -> int | None:
    """The container's memory limit in bytes; None when there is none."""
    candidates = [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    try:  # cgroup v2 nested: this process's own group
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, _, path = line.partition("::")
            if hierarchy == "0" and path not in ("", "/"):
                candidates.insert(0, root / path.lstrip("/") / "memory.max")
    except OSError:
        pass
    for candidate in candidates:
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        # cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX × page size)
        return value if value < 1 << 60 else None
    return None


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (this one by default)."""
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_budget(flag_mb: int | None, fraction: float, rss: int) -> tuple[int, str]:
    """(bytes, where it comes from) for the admission's memory budget."""
    if flag_mb is not None:
        return flag_mb * MiB, "--memory-budget-mb"
    limit = cgroup_memory_limit()
    source = "cgroup memory limit"
    if limit is None:
        limit, source = physical_memory(), "physical memory"
    return max(MIN_BUDGET, int(fraction * limit) - rss), source

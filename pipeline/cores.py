"""How many cores this process may use: the default for every `threads` / `workers` setting."""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (CPU affinity where the OS has it; not cgroup quotas)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1

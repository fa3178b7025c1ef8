"""How many cores this process may use: the default for every `threads` / `workers` setting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    """Cores this process may run on (CPU affinity where the OS has it; not cgroup quotas)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set for the block, then restored (None: available_cores())."""
    import torch  # here, not at module level: sgns and the flows use this module without torch
    before = torch.get_num_threads()
    torch.set_num_threads(threads or available_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)

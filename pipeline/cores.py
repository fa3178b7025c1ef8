"""How many cores this process may use: the default for every `threads` / `workers` setting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    """Cores this process may run on (CPU affinity where the OS has it; not cgroup quotas),
    capped by OMP_NUM_THREADS when set: Dask sets it in every worker process (to 1 by
    default, to each worker's share of the cores in flows/runners.py's LocalCluster), so
    worker processes sharing a machine do not each start a thread per core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(omp))) if omp.isdigit() and int(omp) > 0 else cores


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

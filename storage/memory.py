"""Which allocator Arrow uses in embcache's own processes: one that gives memory back.

Arrow's default pool (mimalloc in the Linux wheels) keeps freed pages: reading one 3 MB
column of a 10⁵-row snapshot left 42 MB more resident with mimalloc, 19 MB with jemalloc and
16 MB with the system allocator, for the same 6 MB of Arrow data. A run reads thousands of
shards one after another, so the peak RSS of a stage follows the pool, not the data.
`embcache`'s console script and its Dask workers use jemalloc (the system allocator where a
wheel lacks it); a user's own process keeps whatever it chose, and ARROW_DEFAULT_MEMORY_POOL
set by the user wins everywhere.
"""

from __future__ import annotations

import os

POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
POOL = "jemalloc"


def use_returning_pool() -> str:
    """Make jemalloc (else the system allocator) Arrow's default pool in this process, unless
    ARROW_DEFAULT_MEMORY_POOL says otherwise; returns the backend in use."""
    import pyarrow as pa
    if os.environ.get(POOL_ENV):
        return pa.default_memory_pool().backend_name
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:              # a build without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name


def worker_environment() -> dict[str, str]:
    """What a worker process started for a command needs in its environment to do the same."""
    return {POOL_ENV: os.environ.get(POOL_ENV) or POOL}

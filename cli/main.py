"""The `embcache` console script: the app with every command group registered.

Each command module registers its commands on the app and groups of cli/app.py when
imported; this module imports them all (nothing imports this module but the entry point
and the tests).
"""

from __future__ import annotations

# in the order `embcache --help` lists the top-level commands (the groups follow them)
from . import store, ingest, query, featurize, train, predict, evaluate, export  # noqa: F401,I001 (register commands)
from . import run as run_cmds, report, prefect_server, schedule  # noqa: F401,I001
from . import serve  # noqa: F401,I001 (the query server)
from . import compact  # noqa: F401,I001 (shard compaction)
from .app import app

__all__ = ["app", "run"]


def run() -> None:  # console-script entry point
    """`app()`, then Python's own shutdown work (other threads joined, atexit handlers, output
    flushed) and os._exit with the command's status. Skipped: C++ static destructors, during
    which Arrow's thread pools sometimes abort a process that had succeeded (status 134,
    apache/arrow#34314; measured by benchmarks/verify_exit.py)."""
    import atexit
    import os
    import sys
    import threading

    from ..storage.memory import use_returning_pool
    use_returning_pool()                   # Arrow's freed memory goes back to the OS (storage/memory.py)
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    for thread in threading.enumerate():   # what the interpreter waits for before atexit
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):      # a reader that left (`| head`), or a closed stream
            pass
    os._exit(code)

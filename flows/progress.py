"""Progress reporting from tasks to whoever runs the flow (the CLI's rich bars), in-process.

Tasks call `advance("encode", n, total)`; with no reporter set it does nothing, so
flows run the same under Prefect workers, Dask, or tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Reporter = Callable[[str, int, int], None]   # (stage, done increment, total)
_reporter: Reporter | None = None
_lock = threading.Lock()


def set_reporter(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter


def advance(stage: str, n: int, total: int) -> None:
    if _reporter is not None:
        with _lock:
            _reporter(stage, n, total)

"""Progress reporting from tasks to whoever runs the flow (the CLI's rich bars), in-process.

Tasks call `advance("encode", n, total)`, flows `say("fine-tuning will take ~4 min")`
before a long phase; with no reporter set both do nothing, so flows run the same under
Prefect workers, Dask, or tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Reporter = Callable[[str, int, int], None]   # (stage, done increment, total)
_reporter: Reporter | None = None
_sayer: Callable[[str], None] | None = None
_lock = threading.Lock()


def set_reporter(reporter: Reporter | None, sayer: Callable[[str], None] | None = None) -> None:
    global _reporter, _sayer
    _reporter, _sayer = reporter, sayer


def say(text: str) -> None:
    """One line for the user, above the bars (an estimate, a phase starting)."""
    if _sayer is not None:
        with _lock:
            _sayer(text)


def advance(stage: str, n: int, total: int) -> None:
    if _reporter is not None:
        with _lock:
            _reporter(stage, n, total)

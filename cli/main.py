"""The `embcache` console script: the app with every command group registered.

Each command module registers its commands on the app and groups of cli/app.py when
imported; this module imports them all (nothing imports this module but the entry point
and the tests).
"""

from __future__ import annotations

from . import pipeline_cmds, report, run as run_cmds, server, train, word2vec  # noqa: F401  (register commands)
from .app import app

__all__ = ["app", "run"]


def run() -> None:  # console-script entry point
    app()

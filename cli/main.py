"""The `embcache` console script: the app with every command group registered.

Each command module registers its commands on the app and groups of cli/app.py when
imported; this module imports them all (nothing imports this module but the entry point
and the tests).
"""

from __future__ import annotations

# in the order `embcache --help` lists the top-level commands (the groups follow them)
from . import store, ingest, query, featurize, train, predict, evaluate, export  # noqa: F401,I001 (register commands)
from . import run as run_cmds, report, server  # noqa: F401,I001
from .app import app

__all__ = ["app", "run"]


def run() -> None:  # console-script entry point
    app()

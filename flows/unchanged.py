"""`embcache run` when nothing changed since the last run: answered without Prefect.

Imports no Prefect (the point is not to start it); stages/noop.py says what is compared.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..stages import noop
from ..storage import FeatureStore
from .run_config import RunConfig, config_to_dict


def state_of(cfg: RunConfig, root: str) -> str | None:
    """The digest of what a run of `cfg` on the store at `root` decides from (None: a source changed).
    A run with --rescan leaves the same digest as one without: the next run compares file states."""
    ingest = replace(cfg.ingest, rescan=False)
    return noop.run_state(FeatureStore(root), config_to_dict(cfg),
                          [(c.name, c.sources) for c in cfg.corpus_list()], ingest, cfg.model)


def unchanged_record(cfg: RunConfig, root: str) -> dict | None:
    """The record of a run that had nothing to do, saved; None when the flow must run."""
    t = time.perf_counter()
    store = FeatureStore(root)
    if not store.exists():
        return None
    state = state_of(cfg, root)
    last = noop.unchanged_run(store, state)
    return None if last is None else noop.record_unchanged(store, last, state, time.perf_counter() - t)

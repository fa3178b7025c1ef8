"""`embcache.run(config)`: the end-to-end Prefect flow, as `embcache run` runs it.

    record = embcache.run("pipeline.toml")                  # or a dict shaped like the file, or None
    record["summary"]["bbc"]["head_accuracy"]

The flow (flows/run.py `pipeline_flow`) runs on a temporary Prefect server started for
the call (flows/temporary_api.py `TemporaryAPI`), or on the server PREFECT_API_URL names; every
stage computes only what the store lacks. Prefect, torch and the stages are imported
here, when a run starts, never by `import embcache`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store


def run(config: str | os.PathLike | dict | None = None, *, store: str | os.PathLike | Store | None = None) -> dict:
    """Run ingest → BERT features → word2vec → heads → report per corpus of `config`; returns the run record.

    config: a TOML/YAML file (re-read by the flow), a dict with the file's keys, or None
    (the embedded BBC demo). store: where to run; default $EMBCACHE_STORE, else the config's
    `store` (as `embcache run`). A bad config raises ConfigError before Prefect starts.
    The record ({"run_id", "status", "stages": [...], "summary": {corpus: ...}, "report"})
    is also saved as runs/<run_id>.json in the store.
    """
    from .flows.run_config import load_config
    source = os.fspath(config) if isinstance(config, os.PathLike) else config
    if source is not None and not isinstance(source, (str, dict)):
        raise TypeError(f"config must be a path, a dict or None, got {type(config).__name__}")
    cfg = load_config(source)
    root = _store_root(store) or os.environ.get("EMBCACHE_STORE") or cfg.store
    from .flows.temporary_api import TemporaryAPI
    with TemporaryAPI() as api:                # starts while the flows import (torch, transformers, Prefect)
        from .flows import runners
        from .flows.run import pipeline_flow
        with api.ready(), runners.session(cfg.runner):
            if isinstance(source, dict):
                return pipeline_flow(config=source, store=root)
            return pipeline_flow(config_path=source, store=root)


def _store_root(store: str | os.PathLike | Store | None) -> str | None:
    from .store import Store
    if store is None:
        return None
    return store.root if isinstance(store, Store) else os.fspath(store)    # a path or URL

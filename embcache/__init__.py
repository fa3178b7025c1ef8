"""embcache: a cached feature store for text embeddings.

    import embcache
    store = embcache.open("./embcache-store")      # after `embcache run` (or embcache.run())
    f = store.features("bbc")                       # snapshot order: doc_ids, labels, splits, vectors
    f.vectors.shape, f.label_names                  # (2225, 384), ('business', 'entertainment', …, 'tech')
    store.similar("bbc", text="interest rates rise", k=5)   # [Hit(doc_id, label, score, text, text_sha), …]

The public API: `open` (a `Store`: corpora, tables, features, lookup, similar, encode,
neighbours, sql), `run` (the end-to-end flow, as `embcache run`) and the errors they raise.
Names are imported on first use (PEP 562), so `import embcache` stays fast and imports
neither torch nor Prefect; torch, transformers, gensim, datasets and Prefect load only
inside the calls that need them. The layers install as subpackages: embcache.storage,
embcache.pipeline, embcache.stages, embcache.flows, embcache.cli.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_EXPORTS = {
    "open": "store", "Store": "store", "TableInfo": "store", "Features": "features", "Hit": "search", "run": "running",
    "StoreError": "errors", "NotFound": "errors", "CorruptShard": "errors", "QueryRefused": "errors",
    "InvalidName": "errors",
    "UnknownKeys": "errors", "PipelineError": "errors", "FlowError": "errors", "ConfigError": "errors",
}
_LAYERS = ("storage", "pipeline", "stages", "flows", "cli")

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .errors import (ConfigError, CorruptShard, FlowError, InvalidName, NotFound, PipelineError, QueryRefused,
                         StoreError, UnknownKeys)
    from .features import Features
    from .running import run
    from .search import Hit
    from .store import Store, TableInfo, open


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version   # ~20 ms: only when asked
    try:
        return version("embcache")
    except PackageNotFoundError:      # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value            # later lookups skip this function
        return value
    if name in _LAYERS:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "__version__", *_EXPORTS, *_LAYERS})

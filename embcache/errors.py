"""The errors the public API raises: each layer's own, plus `UnknownKeys` for ids it does not have.

Every error below names where (a store path, a config file and key, a file:row) and why.
Catch `StoreError` for anything about the store, `PipelineError` for inputs and models,
`FlowError` for run configs and the Prefect server; `UnknownKeys` is also a `KeyError`,
so code written for dicts keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence

from .flows.errors import ConfigError, FlowError
from .pipeline.errors import PipelineError
from .storage.errors import CorruptShard, InvalidName, NotFound, QueryRefused, StoreError

__all__ = ["ConfigError", "CorruptShard", "FlowError", "InvalidName", "NotFound", "PipelineError", "QueryRefused",
           "StoreError", "UnknownKeys"]

SHOWN = 10   # unknown keys named in the message; all of them are in `.keys`


class UnknownKeys(NotFound, KeyError):
    """Ids, text hashes or words that the store does not have; `.keys` lists every one, in the order asked.

    >>> e = UnknownKeys("bbc", ["nope.txt"], "doc_id(s) not in the current snapshot")
    >>> str(e), isinstance(e, KeyError), e.keys
    ("bbc: doc_id(s) not in the current snapshot: 'nope.txt'", True, ['nope.txt'])
    """

    def __init__(self, where: str, keys: Sequence, reason: str):
        self.keys = list(keys)
        shown = ", ".join(repr(k) for k in self.keys[:SHOWN])
        more = f" … ({len(self.keys)} in all)" if len(self.keys) > SHOWN else ""
        super().__init__(where, f"{reason}: {shown}{more}")

    __str__ = Exception.__str__    # KeyError would quote the whole message

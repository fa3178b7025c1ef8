"""Reading the store back: vectors by key, cosine top-k, datasets; SQL (storage/sql.py).

Vectors come from the table's matrix (storage/matrix.py): built once per shard set from
checked shards and kept beside the table. Approximate search over it is storage/ann.py.

Each function takes the caller's caches (a WarmMatrices, a ColumnLookup) and makes fresh
ones when given none: nothing here is kept between calls. `embcache.Store` owns a set of
caches and passes them in, so repeated queries through it are warm.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pyarrow as pa

from . import ann
from .errors import CorruptShard
from .matrix import WarmMatrices, as_matrix, concat_keys, key_array, set_key
from .store import FeatureStore
from .table import Table

__all__ = ["ColumnLookup", "QueryLimits", "as_matrix", "check_read_only", "connect", "lookup_column",
           "lookup_vectors", "sql", "to_dataset", "topk_cosine"]


def sql(store: FeatureStore, query: str, limits=None, verified=None) -> pa.Table:
    """One read-only SELECT over the store (storage/sql.py; DuckDB is imported on first use)."""
    from . import sql as engine
    return engine.sql(store, query, limits or engine.QueryLimits(), verified)


def __getattr__(name: str):
    if name in ("QueryLimits", "check_read_only", "connect"):      # DuckDB loads only when SQL is used
        from . import sql as engine
        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lookup_vectors(store: FeatureStore, table: str, keys, column: str = "vector",
                   fingerprint: str | None = None, to: str = "numpy", matrices: WarmMatrices | None = None):
    """Vectors for `keys` in the given order: (N, D) numpy array, or a torch tensor with to="torch"."""
    t = store.open(table, fingerprint)
    try:
        m = (matrices or WarmMatrices()).get(t, column)
        mat = np.array(m.vectors[m.rows_of(keys)])             # (N, D): the caller's own copy
    except CorruptShard:           # a damaged shard blocks the matrix: read only the shards holding `keys`
        mat = np.array(as_matrix(t.lookup(keys, [column])[column]))
    if to == "torch":
        import torch  # optional: the store itself does not depend on torch
        return torch.from_numpy(mat)
    return mat


def topk_cosine(store: FeatureStore, table: str, queries: np.ndarray, k: int = 5,
                column: str = "vector", fingerprint: str | None = None,
                restrict_to=None, exact: bool = False,
                matrices: WarmMatrices | None = None) -> tuple[list[list], np.ndarray]:
    """Cosine top-k of each query vector over a table's vectors (its warm matrix).

    Returns (keys, scores): keys[i] lists the k best keys for queries[i], scores is (Q, k),
    exact cosines. Through the table's vector index when one was built (`embcache index`)
    and the table is large enough (storage/ann.py), else (or with exact=True) exact.
    `restrict_to`: only consider these keys (e.g. a corpus snapshot's text_sha values).
    """
    t = store.open(table, fingerprint)
    m = (matrices or WarmMatrices()).get(t, column)
    rows = None if restrict_to is None else np.unique(m.rows_of(restrict_to, missing="skip"))
    idx, scores, _ = ann.search(t, m, queries, k, rows, exact=exact)
    return [m.key_of(r) for r in idx], scores


class ShardColumns:
    """LRU: one column of a shard, decoded (and checked) once; committed shards never change."""

    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[str, str, str], pa.Array] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, t: Table, shard, column: str) -> pa.Array:
        key = (t.shard_path(shard), shard.sha256, column)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        values = t.read_shard(shard, [column])[column].combine_chunks()
        with self._lock:
            self._cache[key] = values
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return values


class KeyIndex:
    """Where each key of a table lives, (shard, row), for one shard set: sorted keys, binary search."""

    def __init__(self, t: Table, shards):
        parts = [key_array(t.shard_keys(s)) for s in shards]
        keys = concat_keys(parts)
        self.order = np.argsort(keys, kind="stable")
        self.sorted = keys[self.order]
        self.shard = np.repeat(np.arange(len(parts), dtype=np.int32), [len(p) for p in parts])
        self.row = np.concatenate([np.arange(len(p), dtype=np.int64) for p in parts]) if parts else \
            np.zeros(0, np.int64)


class ColumnLookup:
    """One column's values by key (e.g. documents' text for search hits), warm: each table's key
    index (per shard set) and each shard's column are read once per instance."""

    def __init__(self, max_indexes: int = 16, max_columns: int = 256):
        self.max_indexes = max_indexes
        self.columns = ShardColumns(max_columns)
        self._indexes: OrderedDict[tuple, KeyIndex] = OrderedDict()
        self._lock = threading.Lock()

    def index(self, t: Table, m) -> KeyIndex:
        ident = (t.dir, set_key(m.shards))
        with self._lock:
            index = self._indexes.get(ident)
        if index is None:
            index = KeyIndex(t, m.shards)
            with self._lock:
                self._indexes[ident] = index
                while len(self._indexes) > self.max_indexes:
                    self._indexes.popitem(last=False)
        return index

    def get(self, t: Table, keys, column: str) -> list:
        """`column`'s values for `keys`, in that order (None where a key has no row)."""
        m = t.manifest()
        index = self.index(t, m)
        want = list(keys)
        out = [None] * len(want)
        if len(index.sorted) == 0 or not want:
            return out
        k = key_array(want)
        if k.dtype.kind == "S" and index.sorted.dtype.kind == "S":
            k = k.astype(f"S{max(k.dtype.itemsize, index.sorted.dtype.itemsize)}")
        elif k.dtype.kind != index.sorted.dtype.kind:
            return out
        pos = np.minimum(np.searchsorted(index.sorted, k), len(index.sorted) - 1)
        for i in np.flatnonzero(index.sorted[pos] == k):
            at = index.order[pos[i]]
            values = self.columns.get(t, m.shards[index.shard[at]], column)
            out[i] = values[int(index.row[at])].as_py()
        return out


def lookup_column(store: FeatureStore, table: str, keys, column: str, fingerprint: str | None = None,
                  cache: ColumnLookup | None = None) -> list:
    """One column's values for `keys`, in that order (None where a key has no row); `cache`: keep
    the key index and decoded columns for the next call (ColumnLookup)."""
    return (cache or ColumnLookup()).get(store.open(table, fingerprint), keys, column)


def to_dataset(store: FeatureStore, table: str, fingerprint: str | None = None, columns=None):
    """A Hugging Face `datasets.Dataset` over a table's committed rows."""
    import datasets
    return datasets.Dataset(store.open(table, fingerprint).read(columns))

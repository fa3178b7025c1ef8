"""What a featurize run computes, in which order, in which tasks: O(new) work, O(task) memory.

A run over a corpus of N texts that lacks k of them must cost O(k), not O(N):
- which texts an output table lacks is a key-index lookup (Table.missing: O(N log N) once
  per process to learn the table, then O(k log N)), not a scan per task;
- the missing texts are computed in the order their INPUT rows are stored (the documents
  table for tokens and word2vec examples, bert_tokens for features), so a task's inputs
  sit in one or two shards, and within them in a few Parquet row groups (Table.read_rows):
  a task reads what it needs, not every shard of its input;
- keys stay an Arrow array; a task's Python list is made only when the task is sent.

    >>> batches = KeyBatches(pa.array(["c", "a", "b"]), 2)
    >>> len(batches), list(batches), batches.total
    (2, [['c', 'a'], ['b']], 3)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..storage import FeatureStore, Table


def snapshot_keys(store: FeatureStore, corpus: str, snapshot: str | None = None) -> pa.Array:
    """The distinct text hashes of a corpus snapshot (the current one by default), sorted."""
    keys = store.corpus(corpus).read(snapshot, columns=["text_sha"])["text_sha"]
    return pc.unique(keys).sort()


def in_storage_order(source: Table, keys: pa.Array) -> pa.Array:
    """`keys` sorted by where `source` stores their rows (shard, then row); keys it lacks last."""
    if len(keys) == 0:
        return keys
    shard, row = source.locate(keys)
    shard = np.where(shard < 0, np.iinfo(np.int32).max, shard)
    return keys.take(pa.array(np.lexsort((row, shard))))


def todo(output: Table, source: Table, wanted: pa.Array) -> pa.Array:
    """The keys of `wanted` that `output` lacks, in `source`'s storage order."""
    return in_storage_order(source, output.missing(wanted))


class KeyBatches:
    """Consecutive slices of `size` keys, each made a list of str only when iterated to."""

    def __init__(self, keys: pa.Array, size: int):
        if size < 1:
            raise ValueError(f"batch size must be positive, got {size}")
        self.keys, self.size = keys, size

    @property
    def total(self) -> int:
        return len(self.keys)

    def __len__(self) -> int:
        return -(-len(self.keys) // self.size)

    def __iter__(self) -> Iterator[list[str]]:
        for start in range(0, len(self.keys), self.size):
            yield self.keys.slice(start, self.size).to_pylist()

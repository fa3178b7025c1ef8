"""A shard's key column read on its own: what planning ("which keys are missing?") needs.

Reading a shard verified means reading and hashing the whole file; to plan, only its key
column is needed, and Parquet reads one column without touching the others (for
bert_features, the vectors are ~90 % of the bytes). The file's size is checked against
the manifest (a truncated or replaced shard fails here); its sha256 is checked when its
rows are read (Table.read_shard) and by `embcache verify`. A planning error is harmless:
a key wrongly taken as present is found missing when its rows are read.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptShard, NotFound
from .fs import StoreFS


def _read(fs: StoreFS, path: str, key: str, expected_bytes: int, **options) -> pa.Table:
    try:
        size = fs.info(path)["size"]
    except FileNotFoundError as e:
        raise CorruptShard(path, "committed shard is missing: the manifest lists it, the file does not exist") from e
    except NotFound as e:
        raise CorruptShard(path, str(e)) from e
    if size != expected_bytes:
        raise CorruptShard(path, f"size {size} bytes, manifest says {expected_bytes} (truncated?)")
    try:
        if fs.local:
            return pq.read_table(path, columns=[key], **options)
        with fs.fs.open(path, "rb") as f:
            return pq.read_table(f, columns=[key], **options)
    except (pa.ArrowException, OSError) as e:
        raise CorruptShard(path, f"not a readable Parquet file: {e}") from e


def read_key_column(fs: StoreFS, path: str, key: str, expected_bytes: int) -> pa.Array:
    """The `key` column of the shard at `path`, in row order."""
    return _read(fs, path, key, expected_bytes)[key].combine_chunks()


def read_distinct_keys(fs: StoreFS, path: str, key: str, expected_bytes: int) -> tuple[pa.Array, np.ndarray]:
    """The shard's keys, each with the row of its first occurrence; a key in several row
    groups appears once per group (the earliest first).

    Read as dictionaries: a table with many rows per key (w2v_examples: one per center)
    decodes each row group's distinct keys and an integer per row, not a string per row
    (6x faster on 40 rows per key).
    """
    column = _read(fs, path, key, expected_bytes, read_dictionary=[key])[key]
    keys, rows, offset = [], [], 0
    for chunk in column.chunks:
        if isinstance(chunk, pa.DictionaryArray):
            used, first = np.unique(chunk.indices.to_numpy(zero_copy_only=False), return_index=True)
            keys.append(chunk.dictionary.take(pa.array(used)))
        else:                                       # integer keys are read plain
            _, first = np.unique(chunk.to_numpy(zero_copy_only=False), return_index=True)
            keys.append(chunk.take(pa.array(first)))
        rows.append(first + offset)
        offset += len(chunk)
    if not keys:
        return pa.array([], column.type.value_type if pa.types.is_dictionary(column.type) else column.type), \
            np.zeros(0, np.int64)
    return pa.concat_arrays(keys), np.concatenate(rows)

"""A shard's key column read on its own: what planning ("which keys are missing?") needs.

Reading a shard verified means reading and hashing the whole file; to plan, only its key
column is needed, and Parquet reads one column without touching the others (for
bert_features, the vectors are ~90 % of the bytes). The file's size is checked against
the manifest (a truncated or replaced shard fails here); its sha256 is checked when its
rows are read (Table.read_shard) and by `embcache verify`. A planning error is harmless:
a key wrongly taken as present is found missing when its rows are read.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptShard, NotFound
from .fs import StoreFS


def read_key_column(fs: StoreFS, path: str, key: str, expected_bytes: int) -> pa.Array:
    """The `key` column of the shard at `path`, in row order."""
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
            table = pq.read_table(path, columns=[key])
        else:
            with fs.fs.open(path, "rb") as f:
                table = pq.read_table(f, columns=[key])
    except (pa.ArrowException, OSError) as e:
        raise CorruptShard(path, f"not a readable Parquet file: {e}") from e
    return table[key].combine_chunks()

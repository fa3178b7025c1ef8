"""Parquet shards: encoding with per-column codecs chosen by measurement, and checked decoding.

Columns differ too much to guess: token ids compress ~10x under zstd, hex hashes 2x,
and float vectors only through their exponent bytes (byte-stream-split + zstd: real
MiniLM vectors 0.60 and GloVe 0.63 of pyarrow's default, whose dictionary encoding
makes floats *larger*; benchmarks/store.py). So the first shard of a table tries each
encoding and codec on a sample of every column and keeps the smallest; a codec that
does not save `MIN_GAIN` over the best uncompressed encoding is not used (truly random
floats stay uncompressed, reading them costs no decompression).
The choice is written into the manifest and reused for every later shard.
"""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptShard

# Encodings tried per column: dictionary (pyarrow's default), plain, and for floats
# byte_stream_split; each with every codec. Dictionary encoding of float vectors
# overflows the dictionary and falls back, costing ~15 % over plain (measured).
ENCODINGS = ("dictionary", "plain", "byte_stream_split")
CODECS = ("none", "snappy", "zstd")
MIN_GAIN = 0.10          # a codec must save at least 10 % over 'none' to be used
SAMPLE_ROWS = 2048
ROW_GROUP_ROWS = 8192    # row groups small enough for selective reads of a shard
# Shards are decoded on the calling thread: with Arrow's thread pool, a process that read
# Parquet sometimes aborts as it exits (status 134, "terminate called without an active
# exception": apache/arrow#34314, pyarrow 26.0.1). benchmarks/verify_exit.py counts both.
READ_THREADS = False


def _is_float_column(t: pa.DataType) -> bool:
    while pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return pa.types.is_floating(t)


def leaf_paths(name: str, t: pa.DataType) -> list[str]:
    """Parquet column paths under an Arrow field: per-column options are keyed by these.

    >>> leaf_paths("input_ids", pa.list_(pa.int32()))
    ['input_ids.list.element']
    """
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return leaf_paths(f"{name}.list.element", t.value_type)
    if pa.types.is_struct(t):
        return [p for i in range(t.num_fields) for p in leaf_paths(f"{name}.{t.field(i).name}", t.field(i).type)]
    if pa.types.is_map(t):
        return leaf_paths(f"{name}.key_value.key", t.key_type) + leaf_paths(f"{name}.key_value.value", t.item_type)
    return [name]


def _writer_options(schema: pa.Schema, codecs: dict[str, dict]) -> dict:
    """ParquetWriter options for `codecs` (column -> {"codec", "encoding"}): per leaf column."""
    compression, dictionary, bss = {}, [], []
    for f in schema:
        c = codecs.get(f.name, {"codec": "zstd", "encoding": "dictionary"})
        for path in leaf_paths(f.name, f.type):
            compression[path] = c["codec"]
            if c["encoding"] == "dictionary":
                dictionary.append(path)
            elif c["encoding"] == "byte_stream_split":
                bss.append(path)
    return {"compression": compression, "use_dictionary": dictionary or False,
            "use_byte_stream_split": bss or False, "write_statistics": True}


class _Hashed:
    """A write-only file that hashes and counts what passes through it to `raw`."""

    def __init__(self, raw):
        self.raw, self.sha, self.size, self.closed = raw, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:            # the caller owns `raw`
        self.closed = True


class ShardWriter:
    """A shard's Parquet file written table by table: only a row group's worth of decoded rows
    is held at a time (compaction merges thousands of shards this way), and the bytes go to
    `sink` (a file, say StoreFS.atomic_writer's) as they are made; without one, to memory.

    >>> w = ShardWriter(pa.schema([("k", pa.string())]), {})
    >>> w.write(pa.table({"k": ["a"]})); w.write(pa.table({"k": ["b"]}))
    >>> size, sha = w.finish(); pq.read_table(pa.BufferReader(w.data))["k"].to_pylist()
    ['a', 'b']
    """

    def __init__(self, schema: pa.Schema, codecs: dict[str, dict], sink=None):
        self.schema = schema
        self._memory = io.BytesIO() if sink is None else None
        self._out = _Hashed(sink if sink is not None else self._memory)
        self._writer = pq.ParquetWriter(pa.PythonFile(self._out, mode="w"), schema,
                                        **_writer_options(schema, codecs))
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        rows = pa.concat_tables(self._pending) if self._pending else self.schema.empty_table()
        whole = rows.num_rows if final else rows.num_rows - rows.num_rows % ROW_GROUP_ROWS
        if whole:
            self._writer.write_table(rows.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
        rest = rows.slice(whole)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def finish(self) -> tuple[int, str]:
        """(bytes written, their sha256)."""
        self._flush(final=True)
        self._writer.close()
        return self._out.size, self._out.sha.hexdigest()

    @property
    def data(self) -> bytes:
        """The file's bytes, when written to memory (no sink)."""
        return self._memory.getvalue()


def _encode(table: pa.Table, codecs: dict[str, dict]) -> bytes:
    writer = ShardWriter(table.schema, codecs)
    writer.write(table)
    writer.finish()
    return writer.data


def choose_codecs(table: pa.Table) -> dict[str, dict]:
    """Measure every encoding x codec on a sample of each column; return the choice per column.

    >>> import numpy as np
    >>> t = pa.table({"ids": pa.array(np.arange(4096) % 7), "x": pa.array(np.random.rand(4096))})
    >>> c = choose_codecs(t); c["ids"]["codec"] != "none", c["x"]["ratio"] > 0.5
    (True, True)
    """
    sample = table.slice(0, SAMPLE_ROWS)
    chosen = {}
    for f in sample.schema:
        col = sample.select([f.name])
        sizes = {}
        for encoding in ENCODINGS:
            if encoding == "byte_stream_split" and not _is_float_column(f.type):
                continue
            for codec in CODECS:
                sizes[(encoding, codec)] = len(_encode(col, {f.name: {"codec": codec, "encoding": encoding}}))
        # The baseline is pyarrow's default encoding without compression.
        base = sizes[("dictionary", "none")]
        uncompressed = {k: v for k, v in sizes.items() if k[1] == "none"}
        (encoding, codec), best = min(sizes.items(), key=lambda kv: kv[1])
        if codec != "none" and best > (1 - MIN_GAIN) * min(uncompressed.values()):
            # Compression must pay for its CPU: otherwise keep the best uncompressed encoding.
            (encoding, codec), best = min(uncompressed.items(), key=lambda kv: kv[1])
        chosen[f.name] = {"codec": codec, "encoding": encoding, "ratio": round(best / base, 4),
                          "tried": {f"{e}+{c}": round(n / base, 4) for (e, c), n in sizes.items()}}
    return chosen


def encode_shard(table: pa.Table, codecs: dict[str, dict]) -> tuple[bytes, str]:
    """Parquet bytes of `table` and their sha256."""
    data = _encode(table, codecs)
    return data, hashlib.sha256(data).hexdigest()


def decode_shard(path: str, data: bytes, expected_size: int, expected_sha256: str | None,
                 columns: list[str] | None = None, filters=None) -> pa.Table:
    """Parse shard bytes after checking them against the manifest; name the file on failure.

    `filters` (pyarrow's DNF form, e.g. [("epoch", "=", 1)]) skip row groups by their
    statistics before decoding, then drop non-matching rows.
    """
    if len(data) != expected_size:
        raise CorruptShard(path, f"size {len(data)} bytes, manifest says {expected_size} (truncated?)")
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise CorruptShard(path, f"sha256 {actual[:12]}… does not match manifest "
                                     f"{expected_sha256[:12]}… (bytes changed on disk)")
    try:   # one thread: Arrow's pool can abort the process at exit (apache/arrow#34314; benchmarks/verify_exit.py)
        return pq.read_table(pa.BufferReader(data), columns=columns, filters=filters, use_threads=READ_THREADS)
    except (pa.ArrowException, OSError) as e:
        raise CorruptShard(path, f"not a readable Parquet file: {e}") from e

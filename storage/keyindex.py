"""Which shard holds each committed key of a table: sorted runs, binary search, O(new) checks.

Planning asks "which of these k keys are committed, and where?" once per task and once
per commit. Answering from every shard's key column (an Arrow `is_in` over all of them)
costs O(keys in the table) each time, so a run over a growing table costs O(N²). A
`KeyIndex` answers in O(k log N): a table's distinct keys are kept sorted in a few runs
(log-structured: a shard's keys join as a small run, and runs of similar size merge, so
each key is merged O(log N) times), each key with the position of its shard in the
manifest and the row of its first occurrence there.

    >>> index = KeyIndex().with_shard("part-a", "sha-a", key_array(["b2", "a1"]))
    >>> index = index.with_shard("part-b", "sha-b", key_array(["c3"]))
    >>> index.find(key_array(["c3", "zz", "a1"]))           # (shard position, row); -1: absent
    (array([ 1, -1,  0], dtype=int32), array([0, 0, 1], dtype=int32))

Memory: a key costs its bytes plus 8 (shard, row); 64-hex-digit keys (text_sha) are kept
as their 32 binary bytes, so 10⁶ documents cost ~40 MB per table. An index is immutable:
adding a shard returns a new one sharing the old runs, so readers never see it half built.

Keys compare as fixed-width bytes (numpy 'S'), where trailing NUL bytes do not count, so a
string key may not end in NUL: `Table.write` refuses such keys.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX_VALUE = np.full(256, 255, np.uint8)                 # ASCII byte -> nibble (255: not lowercase hex)
_HEX_VALUE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX_VALUE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)


def key_array(keys) -> np.ndarray:
    """Keys as a numpy array that sorts and compares like them: int64, or utf-8 bytes ('S<width>').

    Arrow strings are converted from their buffers, without a Python object per key.

    >>> key_array(["ab", "c"]), key_array(pa.array([3, 1]))
    (array([b'ab', b'c'], dtype='|S2'), array([3, 1]))
    """
    arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys), type=_guess(keys))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type):
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.binary())                      # 32-bit offsets: one shard's keys fit
    elif not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        arr = arr.cast(pa.string())
    if arr.null_count:
        raise ValueError("keys have nulls")
    n = len(arr)
    if n == 0:
        return np.zeros(0, "S1")
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    if (lengths == width).all():                                   # text hashes: no padding needed
        return data[offsets[0]:offsets[-1]].view(f"S{width}").copy()
    out = np.zeros((n, width), np.uint8)
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(int(lengths.sum())) - np.repeat(offsets[:-1] - offsets[0], lengths)
    out[rows, cols] = data[offsets[0]:offsets[-1]]
    return out.view(f"S{width}").reshape(n)


def _guess(keys: Sequence) -> pa.DataType | None:
    first = next(iter(keys), None)
    return pa.string() if isinstance(first, str) else None


def pack_hex64(keys: np.ndarray) -> np.ndarray | None:
    """64-hex-digit keys ('S64') as their 32 bytes ('S32'), or None if any key is not lowercase hex."""
    if keys.dtype != np.dtype("S64"):
        return None
    nibbles = _HEX_VALUE[keys.view(np.uint8).reshape(len(keys), 64)]         # (n, 64)
    if (nibbles == 255).any():
        return None
    return ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view("S32").reshape(len(keys))


def unpack_hex64(packed: np.ndarray) -> np.ndarray:
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    b = packed.view(np.uint8).reshape(len(packed), 32)
    out = np.empty((len(packed), 64), np.uint8)
    out[:, 0::2], out[:, 1::2] = digits[b >> 4], digits[b & 15]
    return out.view("S64").reshape(len(packed))


@dataclass(frozen=True)
class Run:
    keys: np.ndarray      # (n,) sorted, distinct
    shard: np.ndarray     # (n,) int32: the shard's position in the manifest
    row: np.ndarray       # (n,) int32: first row of the key in that shard


def _merge(a: Run, b: Run) -> Run:
    """Two sorted runs as one, in O(len(a) + len(b)) (np.insert at searchsorted positions)."""
    at = np.searchsorted(a.keys, b.keys)
    return Run(np.insert(a.keys, at, b.keys), np.insert(a.shard, at, b.shard), np.insert(a.row, at, b.row))


class KeyIndex:
    """The distinct keys of a list of shards (a manifest's, in order) with where each lives."""

    def __init__(self, shards: tuple[tuple[str, str], ...] = (), runs: tuple[Run, ...] = (),
                 mode: str | None = None):
        self.shards = shards      # ((file, sha256), ...) covered, in manifest order
        self.runs = runs
        self.mode = mode          # "int" | "hex64" (packed text hashes) | "bytes" | None (no key yet)

    def __len__(self) -> int:
        return sum(len(r.keys) for r in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(r.keys.nbytes + r.shard.nbytes + r.row.nbytes for r in self.runs)

    def covers_prefix_of(self, shards: tuple[tuple[str, str], ...]) -> bool:
        return self.shards == shards[:len(self.shards)]

    # -- building ------------------------------------------------------------
    def with_shard(self, file: str, sha256: str, keys: np.ndarray, rows: np.ndarray | None = None) -> "KeyIndex":
        """A new index that also covers this shard, given its key column in row order (or any
        keys with `rows`, the row of each: the first row of a repeated key is kept)."""
        uniq, first = np.unique(keys, return_index=True)
        if rows is not None:
            first = rows[first]
        position = len(self.shards)
        mode, runs = self.mode, self.runs
        stored, mode, runs = self._to_mode(uniq, mode, runs)
        run = Run(stored, np.full(len(stored), position, np.int32), first.astype(np.int32))
        if len(stored) and mode == "bytes" and runs and runs[0].keys.dtype.itemsize != stored.dtype.itemsize:
            width = max(runs[0].keys.dtype.itemsize, stored.dtype.itemsize)   # one width for every run
            runs = tuple(Run(r.keys.astype(f"S{width}"), r.shard, r.row) for r in runs)
            run = Run(stored.astype(f"S{width}"), run.shard, run.row)
        runs = list(runs) + ([run] if len(stored) else [])
        while len(runs) >= 2 and len(runs[-2].keys) <= 2 * len(runs[-1].keys):   # log-structured merge
            b, a = runs.pop(), runs.pop()
            runs.append(_merge(a, b))
        return KeyIndex(self.shards + ((file, sha256),), tuple(runs), mode)

    @staticmethod
    def _to_mode(uniq: np.ndarray, mode: str | None, runs: tuple[Run, ...]):
        """`uniq` in the index's storage form; switches the index to plain bytes if it must."""
        if uniq.dtype.kind == "i":
            if mode not in (None, "int"):
                raise ValueError("a table's keys are all integers or all strings")
            return uniq, "int", runs
        if mode == "int":
            raise ValueError("a table's keys are all integers or all strings")
        if mode in (None, "hex64"):
            packed = pack_hex64(uniq) if len(uniq) else np.zeros(0, "S32")
            if packed is not None:
                return packed, "hex64", runs
            if mode == "hex64":                  # a key that is not a text hash: store plain bytes from now on
                runs = tuple(Run(unpack_hex64(r.keys), r.shard, r.row) for r in runs)
        return uniq, "bytes", runs

    # -- asking --------------------------------------------------------------
    def _query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query keys in the index's form, which of them can be present at all)."""
        possible = np.ones(len(q), bool)
        if self.mode == "int":
            return (q, possible) if q.dtype.kind == "i" else (np.zeros(len(q), np.int64), ~possible)
        if q.dtype.kind == "i":
            return np.zeros(len(q), "S1"), ~possible
        if self.mode == "hex64":
            if q.dtype.itemsize != 64:
                if q.dtype.itemsize < 64:
                    return np.zeros(len(q), "S32"), ~possible
                possible = np.char.str_len(q) == 64
                q = q.astype("S64")
            packed = np.zeros((len(q), 32), np.uint8).view("S32").reshape(len(q))
            nibbles = _HEX_VALUE[q.view(np.uint8).reshape(len(q), 64)]
            possible &= (nibbles != 255).all(axis=1)
            ok = np.flatnonzero(possible)
            packed[ok] = ((nibbles[ok, 0::2] << 4) | nibbles[ok, 1::2]).view("S32").reshape(len(ok))
            return packed, possible
        width = self.runs[0].keys.dtype.itemsize if self.runs else 1
        if q.dtype.itemsize > width:
            possible = np.char.str_len(q) <= width
        return q.astype(f"S{width}"), possible

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each key: (shard position, first row), or (-1, 0) when it is not committed."""
        shard = np.full(len(keys), -1, np.int32)
        row = np.zeros(len(keys), np.int32)
        if not self.runs or not len(keys):
            return shard, row
        q, possible = self._query(keys)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run.keys, q), len(run.keys) - 1)
            hit = possible & (run.keys[at] == q) & (shard < 0)
            shard[hit], row[hit] = run.shard[at[hit]], run.row[at[hit]]
        return shard, row

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self.find(keys)[0] >= 0

    def keys(self) -> np.ndarray:
        """Every key, sorted, in the form key_array gives (text hashes as 'S64' hex)."""
        if not self.runs:
            return np.zeros(0, "S1")
        merged = self.runs[0]
        for run in self.runs[1:]:
            merged = _merge(merged, run)
        return unpack_hex64(merged.keys) if self.mode == "hex64" else merged.keys


class KeyIndexes:
    """Per process: each table's key index for the shard list it last saw (LRU over tables).

    `for_shards` extends an index whose shards are a prefix of the asked list (commits
    append shards), and builds anew otherwise (compaction and repair replace shards).
    """

    def __init__(self, max_tables: int = 32):
        self.max_tables = max_tables
        self._cache: OrderedDict[str, KeyIndex] = OrderedDict()
        self._lock = threading.Lock()

    def for_shards(self, table_dir: str, shards: tuple[tuple[str, str], ...],
                   read_keys: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> KeyIndex:
        """The index covering exactly `shards`; read_keys(i) gives shard i's keys and their rows."""
        with self._lock:
            index = self._cache.get(table_dir)
            if index is not None:
                self._cache.move_to_end(table_dir)
        if index is None or not index.covers_prefix_of(shards):
            index = KeyIndex()
        for i in range(len(index.shards), len(shards)):
            index = index.with_shard(*shards[i], *read_keys(i))
        self.put(table_dir, index)
        return index

    def put(self, table_dir: str, index: KeyIndex) -> None:
        with self._lock:
            known = self._cache.get(table_dir)
            if known is not None and len(known.shards) > len(index.shards) and known.covers_prefix_of(index.shards):
                return                              # another thread already went further
            self._cache[table_dir] = index
            self._cache.move_to_end(table_dir)
            while len(self._cache) > self.max_tables:
                self._cache.popitem(last=False)

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def has_nul(keys: pa.Array | pa.ChunkedArray) -> bool:
    """True when a string key contains a NUL byte (keys compare as NUL-padded bytes)."""
    if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        return False
    return bool(pc.any(pc.match_substring(keys, "\x00")).as_py())

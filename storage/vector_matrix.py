"""One table column's vectors as an (N, D) float32 matrix with its keys: lookups and exact top-k.

storage/matrix.py builds, checks and keeps these (the files beside a table); this is the
in-memory object every reader searches (embcache.search, storage/ann.py, the index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .errors import NotFound, StoreError

BLOCK_ROWS = 262_144                                    # rows scored at once: (block, Q) float32 scores


def as_matrix(column: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A (fixed-size) list column of vectors as an (N, D) array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        width = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else 0
        return np.zeros((0, width), dtype=dtype)
    if arr.null_count:
        raise StoreError("vectors", f"{arr.null_count} null vectors")
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(arr), -1).astype(dtype, copy=False)


def key_array(keys) -> np.ndarray:
    """Keys as a numpy array that sorts and compares like them: int64, or utf-8 bytes ('S')."""
    arr = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(list(keys))
    if pa.types.is_integer(arr.type):
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = arr.to_pylist()
    return np.array([v.encode() if isinstance(v, str) else bytes(v) for v in values], dtype="S") \
        if values else np.zeros(0, dtype="S1")


def _as_list(keys) -> list:
    return keys.to_pylist() if isinstance(keys, (pa.Array, pa.ChunkedArray)) else list(keys)


@dataclass
class VectorMatrix:
    """(N, D) float32 vectors of one table column, with their keys; read-only."""
    table: str
    fingerprint: str
    column: str
    setkey: str
    shards: tuple[tuple[str, str, int], ...]   # (file, sha256, rows) in row order
    vectors: np.ndarray                        # (N, D) float32, read into this process (matrix.py: why)
    keys: np.ndarray                           # (N,) int64 or bytes
    sorted: np.ndarray                         # (N,) keys sorted
    order: np.ndarray                          # (N,) int64: row of sorted[i]
    norms: np.ndarray                          # (N,) float32
    files: tuple[str, ...] = ()                # local files mapped (watched for changes)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def unit(self) -> bool:
        """All rows unit length: cosine is the plain dot product (no division)."""
        if not hasattr(self, "_unit"):
            self._unit = bool(len(self.norms) == 0 or np.abs(self.norms - 1).max() < 1e-4)
        return self._unit

    def key_of(self, rows) -> list:
        """The keys of rows, as str (or int)."""
        values = self.keys[np.asarray(rows, dtype=np.int64)]
        return [v.decode() if isinstance(v, bytes) else int(v) for v in values]

    def find(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the keys found, in the order given; (len(keys),) bool: which were found)."""
        want = key_array(keys)
        if len(self.sorted) == 0 or len(want) == 0:
            return np.zeros(0, np.int64), np.zeros(len(want), bool)
        if want.dtype.kind == "S" and self.sorted.dtype.kind == "S":
            want = want.astype(f"S{max(want.dtype.itemsize, self.sorted.dtype.itemsize)}")
        elif want.dtype.kind != self.sorted.dtype.kind:
            return np.zeros(0, np.int64), np.zeros(len(want), bool)
        pos = np.minimum(np.searchsorted(self.sorted, want), len(self.sorted) - 1)
        found = self.sorted[pos] == want
        return np.asarray(self.order[pos[found]], dtype=np.int64), found

    def rows_of(self, keys, missing: str = "error") -> np.ndarray:
        """Row positions of `keys` in the order given; "error": NotFound names absent keys, "skip": drops them."""
        rows, found = self.find(keys)
        if not found.all() and missing == "error":
            absent = [k for k, ok in zip(_as_list(keys), found) if not ok]
            raise NotFound(self.table, f"{len(absent)} key(s) not in {self.table}: "
                                       f"{', '.join(map(str, absent[:5]))}{' …' if len(absent) > 5 else ''}")
        return rows

    def normalized(self, queries) -> np.ndarray:
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))                        # (Q, D)
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:       # the caller's mistake, not the store's
            raise ValueError(f"query vectors have {q.shape[-1]} values; {self.table}.{self.column} has "
                             f"{self.vectors.shape[1]}")
        if not np.isfinite(q).all():
            raise ValueError("query vectors must be finite (no NaN or infinity, nothing beyond float32's range)")
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    def scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Cosine of normalized queries (Q, D) with the given rows: (Q, len(rows))."""
        s = q @ self.vectors[rows].T
        return s if self.unit else s / np.maximum(self.norms[rows], 1e-12)

    def topk(self, queries, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine top-k: (Q, k) rows and scores, best first. `rows`: search only these."""
        q = self.normalized(queries)
        if rows is not None and len(rows) > len(self) // 2:     # most rows: scan all, drop the others
            keep = np.zeros(len(self), bool)
            keep[rows] = True
            idx, scores = self.topk(q, k + int((~keep).sum()))
            out = [(r[keep[r]][:k], s[keep[r]][:k]) for r, s in zip(idx, scores)]
            return np.stack([r for r, _ in out]), np.stack([s for _, s in out])
        n = len(self) if rows is None else len(rows)
        best_rows = np.zeros((len(q), 0), np.int64)
        best = np.zeros((len(q), 0), np.float32)
        for start in range(0, n, BLOCK_ROWS):
            stop = min(n, start + BLOCK_ROWS)
            if rows is None:
                s = q @ self.vectors[start:stop].T                                       # (Q, block)
                if not self.unit:
                    s = s / np.maximum(self.norms[start:stop], 1e-12)
                ids = np.arange(start, stop)
            else:
                ids = rows[start:stop]
                s = self.scores(q, ids)
            take = min(k, s.shape[1])
            part = np.argpartition(-s, take - 1, axis=1)[:, :take] if take < s.shape[1] else \
                np.broadcast_to(np.arange(s.shape[1]), (len(q), s.shape[1]))
            best = np.concatenate([best, np.take_along_axis(s, part, 1)], axis=1)
            best_rows = np.concatenate([best_rows, ids[part]], axis=1)
        order = np.argsort(-best, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(best_rows, order, 1), np.take_along_axis(best, order, 1)

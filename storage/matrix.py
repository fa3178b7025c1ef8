"""A table's vectors as one contiguous float32 matrix, memory-mapped: the warm read path.

    m = WARM.get(store.open("bert_features"))   # built once per shard set, then only mapped
    m.rows_of(["3f2a…", "9bc1…"])                # row positions of keys (binary search)
    rows, scores = m.topk(q, k=10)               # exact cosine, (Q, k) each

A derived artifact, a cache entry like any other: keyed by what it came from, checked
before use, rebuildable, never the only copy. Files under tables/<name>/<fp>/derived/:

    matrix-<column>-<setkey>.json        {"format": "embcache.vector_matrix", "format_version": 1, …}
    matrix-<column>-<setkey>.f32         (N, D) float32, row-major, shards in manifest order
    matrix-<column>-<setkey>.keys.npy    (N,) the key of each row
    matrix-<column>-<setkey>.sorted.npy  (N,) the keys sorted; .order.npy: their rows
    matrix-<column>-<setkey>.norms.npy   (N,) each row's L2 norm

`setkey` hashes the manifest's shard list (file and sha256). A commit that adds shards
makes a new key; the new matrix copies the previous one's rows (its shard list is a
prefix of the new one) and appends the new shards' rows, read through Table.read_shard
and so checked against the manifest. Anything else (compaction, repair) rebuilds. The
.json is written last and lists every file's sha256: each is checked once per process
(storage/verified.py) before it is mapped, and a damaged one is rebuilt from the shards.
Object stores (nothing local to map) and read-only stores get the same matrix in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import manifest as mf
from .errors import CorruptShard, FormatError, NotFound, StoreError
from .fs import TMP_PREFIX
from .lock import commit_lock
from .table import Table
from .verified import VERIFIED, file_sha256, stamp

MATRIX_FORMAT = ("embcache.vector_matrix", 1)
PARTS = ("keys", "sorted", "order", "norms")           # the .npy files beside the .f32
COLUMN_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
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


def set_key(shards: tuple[mf.Shard, ...]) -> str:
    """What a matrix or index was derived from: the committed shard list, in order."""
    h = hashlib.sha256("\n".join(f"{s.file} {s.sha256}" for s in shards).encode())
    return h.hexdigest()[:16]


@dataclass
class VectorMatrix:
    """(N, D) float32 vectors of one table column, with their keys; read-only."""
    table: str
    fingerprint: str
    column: str
    setkey: str
    shards: tuple[tuple[str, str, int], ...]   # (file, sha256, rows) in row order
    vectors: np.ndarray                        # (N, D) float32, memory-mapped where possible
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
        if q.shape[1] != self.vectors.shape[1]:
            raise StoreError(self.table, f"query vectors have {q.shape[1]} values; {self.table}."
                                         f"{self.column} has {self.vectors.shape[1]}")
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


# -- building and opening ------------------------------------------------------------------
def derived_dir(t: Table) -> str:
    return f"{t.dir}/derived"


def _name(column: str, setkey: str, part: str) -> str:
    return f"matrix-{column}-{setkey}.{part}"


def _paths(t: Table, column: str, setkey: str) -> dict[str, str]:
    base = f"{derived_dir(t)}/matrix-{column}-{setkey}"
    return {"vectors": f"{base}.f32", **{p: f"{base}.{p}.npy" for p in PARTS}}


def _read_meta(t: Table, path: str) -> dict:
    meta = mf.load(path, t.fs.read_bytes(path), MATRIX_FORMAT, "vector matrix")
    if meta.get("table") != t.name or meta.get("fingerprint") != t.fingerprint:
        raise FormatError(path, f"vector matrix names {meta.get('table')}/{str(meta.get('fingerprint'))[:12]}")
    return meta


def _open_files(t: Table, meta: dict, setkey: str, column: str) -> VectorMatrix:
    """Map a built matrix after checking every file it lists (once per process)."""
    paths = _paths(t, column, setkey)
    for part, path in paths.items():
        entry = meta["files"][part]
        VERIFIED.check(t.fs, path, entry["bytes"], entry["sha256"], "derived vector matrix file")
    rows, dim = int(meta["rows"]), int(meta["dim"])
    vectors = np.memmap(paths["vectors"], np.float32, "r", shape=(rows, dim)) if rows * dim else \
        np.zeros((rows, dim), np.float32)
    arrays = {p: np.load(paths[p], mmap_mode="r", allow_pickle=False) for p in PARTS}
    return VectorMatrix(t.name, t.fingerprint, column, setkey, tuple(tuple(s) for s in meta["shards"]),
                        vectors, arrays["keys"], arrays["sorted"], arrays["order"], arrays["norms"],
                        files=tuple(paths.values()))


def _shard_arrays(t: Table, shard: mf.Shard, column: str) -> tuple[np.ndarray, np.ndarray]:
    rows = t.read_shard(shard, [t.key, column])                  # checked against the manifest
    return np.ascontiguousarray(as_matrix(rows[column])), key_array(rows[t.key])


def _in_memory(t: Table, m: mf.Manifest, column: str) -> VectorMatrix:
    parts = [_shard_arrays(t, s, column) for s in m.shards]
    dim = _dim(m, column)
    vectors = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, dim), np.float32)
    keys = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, "S1")
    order = np.argsort(keys, kind="stable")
    return VectorMatrix(t.name, t.fingerprint, column, set_key(m.shards),
                        tuple((s.file, s.sha256, s.rows) for s in m.shards), vectors, keys, keys[order],
                        order, np.linalg.norm(vectors, axis=1).astype(np.float32))


def _dim(m: mf.Manifest, column: str) -> int:
    schema = m.arrow_schema()
    if schema is None or column not in schema.names:
        raise StoreError(m.table, f"no column {column!r} in {m.table}")
    t = schema.field(column).type
    return t.list_size if pa.types.is_fixed_size_list(t) else 0


def _prefix(t: Table, m: mf.Manifest, column: str) -> tuple[dict, str] | None:
    """The longest existing matrix whose shards start the current list, with its setkey."""
    best = None
    want = [(s.file, s.sha256) for s in m.shards]
    for base in t.fs.listdir(derived_dir(t)):
        if not (base.startswith(f"matrix-{column}-") and base.endswith(".json")):
            continue
        try:
            meta = _read_meta(t, f"{derived_dir(t)}/{base}")
        except StoreError:
            continue
        have = [(f, sha) for f, sha, _ in meta["shards"]]
        if have == want[:len(have)] and (best is None or len(have) > len(best[0]["shards"])):
            best = (meta, base[len(f"matrix-{column}-"):-len(".json")])
    return best


def _build(t: Table, m: mf.Manifest, column: str, setkey: str) -> dict:
    """Write the matrix files for the manifest's shards (extending a prefix when there is one)."""
    fs, ddir = t.fs, derived_dir(t)
    fs.makedirs(ddir)
    tmp = {p: f"{ddir}/{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}"
           for p, path in _paths(t, column, setkey).items()}
    base = _prefix(t, m, column)
    try:
        old = None if base is None else _open_files(t, base[0], base[1], column)   # checked before reuse
    except (NotFound, CorruptShard, KeyError, ValueError):
        old = None                                                  # damaged: start from the shards
    keys, norms, done, dim = [], [], 0, _dim(m, column)
    try:
        with open(tmp["vectors"], "wb") as out:
            if old is not None:
                with open(old.files[0], "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
                keys.append(np.asarray(old.keys))
                norms.append(np.asarray(old.norms))
                done = len(old.shards)
            for s in m.shards[done:]:
                vectors, k = _shard_arrays(t, s, column)
                out.write(vectors.tobytes())
                keys.append(k)
                norms.append(np.linalg.norm(vectors, axis=1).astype(np.float32))
            out.flush()
            os.fsync(out.fileno())
        all_keys = concat_keys(keys)
        order = np.argsort(all_keys, kind="stable")
        for part, arr in (("keys", all_keys), ("sorted", all_keys[order]), ("order", order.astype(np.int64)),
                          ("norms", np.concatenate(norms) if norms else np.zeros(0, np.float32))):
            np.save(tmp[part], arr, allow_pickle=False)
        files = {}
        for part, path in tmp.items():
            size, sha = file_sha256(fs, path)
            files[part] = {"file": os.path.basename(_paths(t, column, setkey)[part]), "bytes": size, "sha256": sha}
        for part, path in tmp.items():
            os.replace(path, _paths(t, column, setkey)[part])
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.unlink(path)
    meta = {**mf.header(MATRIX_FORMAT), "table": t.name, "fingerprint": t.fingerprint, "column": column,
            "key": m.key, "rows": int(sum(len(k) for k in keys)), "dim": dim, "dtype": "float32",
            "shards": [[s.file, s.sha256, s.rows] for s in m.shards], "files": files, "created": mf.utcnow()}
    fs.write_atomic(f"{ddir}/{_name(column, setkey, 'json')}", mf.dump(meta))
    _remove_stale(t, column, setkey)
    return meta


def concat_keys(keys: list[np.ndarray]) -> np.ndarray:
    """Key arrays of shards as one array; fixed-width bytes keys widened to the widest."""
    keys = [k for k in keys if len(k)]
    if not keys:
        return np.zeros(0, "S1")
    if keys[0].dtype.kind == "S":
        width = max(k.dtype.itemsize for k in keys)
        return np.concatenate([k.astype(f"S{width}") for k in keys])
    return np.concatenate(keys)


def _remove_stale(t: Table, column: str, keep: str) -> None:
    """Older shard sets' matrices (a process still mapping one keeps its pages: unlinking is safe)."""
    for base in t.fs.listdir(derived_dir(t)):
        if base.startswith(f"matrix-{column}-") and not base.startswith(f"matrix-{column}-{keep}."):
            t.fs.delete(f"{derived_dir(t)}/{base}")


def open_matrix(t: Table, column: str = "vector", m: mf.Manifest | None = None) -> VectorMatrix:
    """The table's matrix for its current shard set: mapped if built, else built (or extended) first."""
    if not COLUMN_RE.match(column):
        raise StoreError(column, "vector column names are letters, digits and underscores")
    m = m or t.manifest()
    setkey = set_key(m.shards)
    if not t.fs.local:
        return _in_memory(t, m, column)
    meta_path = f"{derived_dir(t)}/{_name(column, setkey, 'json')}"
    try:
        return _open_files(t, _read_meta(t, meta_path), setkey, column)
    except (NotFound, CorruptShard, FormatError, KeyError, ValueError):
        pass                                        # absent, or damaged: rebuild from the shards
    try:
        with commit_lock(t.fs, f"{derived_dir(t)}/.lock"):
            try:
                return _open_files(t, _read_meta(t, meta_path), setkey, column)   # another process built it
            except (NotFound, CorruptShard, FormatError, KeyError, ValueError):
                meta = _build(t, m, column, setkey)
            return _open_files(t, meta, setkey, column)
    except CorruptShard:
        raise
    except (OSError, StoreError):      # e.g. a read-only store: the same matrix, in memory (which
        return _in_memory(t, m, column)  # raises again any error that is not about writing)


class WarmMatrices:
    """Process-wide: each table's matrix, re-derived only when its manifest (or a mapped file) changes.

    The manifest's and the mapped files' stat are re-checked at most every `recheck_s`
    seconds: 0 (every call) by default; `embcache serve`, answering thousands of lookups a
    second, sets 0.05 and sees a commit that late.
    """

    def __init__(self, recheck_s: float = 0.0):
        self.recheck_s = recheck_s
        self._cache: dict[tuple, tuple] = {}
        self._checked: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def get(self, t: Table, column: str = "vector") -> VectorMatrix:
        key = (t.fs.url, t.name, t.fingerprint, column)
        with self._lock:
            hit = self._cache.get(key)
            fresh = time.monotonic() - self._checked.get(key, -1e9) < self.recheck_s
        if hit is not None and fresh:
            return hit[1]
        now = stamp(t.fs, t.manifest_path) if t.fs.local else None
        if hit is not None and now is not None and hit[0] == now and _unchanged(t, hit[1]):
            with self._lock:
                self._checked[key] = time.monotonic()
            return hit[1]
        m = t.manifest()
        if hit is not None and hit[1].setkey == set_key(m.shards) and _unchanged(t, hit[1]):
            matrix = hit[1]
        else:
            matrix = open_matrix(t, column, m)
        with self._lock:
            self._cache[key] = (now, matrix)
            self._checked[key] = time.monotonic()
        return matrix

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
            self._checked.clear()


def _unchanged(t: Table, matrix: VectorMatrix) -> bool:
    """The mapped files still have the stat they were verified with (else: verify or rebuild again)."""
    if not matrix.files:
        return True
    try:
        return all(VERIFIED.is_current(t.fs, path) for path in matrix.files)
    except NotFound:
        return False


WARM = WarmMatrices()

"""Approximate nearest neighbours over a table's matrix: a faiss HNSW index, re-ranked exactly.

    index = build_index(table)                    # `embcache index bert_features`
    rows, scores = search(table, matrix, q, k=10)  # indexed where an index exists, else exact

Optional: faiss comes with `pip install 'embcache[ann]'`; without it, or below
`AnnConfig.min_rows` rows, search is the exact one (storage/matrix.py), which is also
what `exact=True` asks for. Files under tables/<name>/<fp>/derived/:

    ann-<column>-<setkey>.faiss   faiss.write_index of IndexIDMap(IndexHNSW…), ids = matrix rows
    ann-<column>-<setkey>.json    {"format": "embcache.ann_index", "format_version": 1, shards, config, sha256}

Keyed like the matrix by the shard list it covers. Commits only append shards, and the
matrix keeps earlier rows in place, so an index of a prefix of the shard list stays
valid for the rows it has: search uses it for those and scans the rows added since
exactly (no query ever waits for a build), and `build_index` extends it with
`add_with_ids` of only the new rows. A shard list that is not an extension (compaction,
repair) makes a full rebuild. Candidates (k × `rerank`) are re-scored with the exact
cosine from the matrix, so scores are exact and only recall is approximate.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from . import manifest as mf
from .errors import CorruptShard, FormatError, NotFound, StoreError
from .fs import TMP_PREFIX
from .lock import commit_lock
from .matrix import VectorMatrix, derived_dir
from .table import Table
from .verified import VERIFIED, file_sha256

ANN_FORMAT = ("embcache.ann_index", 1)
BUILD_ROWS = 65_536          # rows normalized and added per faiss call (bounded memory)


@dataclass(frozen=True)
class AnnConfig:
    """The HNSW index and how queries use it (faiss's names in brackets)."""
    m: int = 32                                 # graph degree [M]: higher = better recall, more memory/build
    ef_construction: int = 40                   # candidates while inserting [efConstruction]
    ef_search: int = 64                         # candidates while searching [efSearch]: recall vs latency
    storage: Literal["flat", "sq8"] = "flat"    # vectors inside the index: float32, or 8-bit (1/4 the memory)
    rerank: int = 4                             # k × rerank candidates re-scored exactly from the matrix
    min_rows: int = 20_000                      # smaller tables are searched exactly (fast enough, exact)
    search_threads: int = 1                     # OpenMP threads per query: 1 is 4x faster on 2 busy cores
    build_threads: int = 0                      # OpenMP threads while building (0: faiss's default, all)


def require_faiss():
    try:
        import faiss
    except ImportError:
        raise StoreError("faiss", "a vector index needs faiss: pip install 'embcache[ann]'") from None
    return faiss


def have_faiss() -> bool:
    try:
        require_faiss()
        return True
    except StoreError:
        return False


def _paths(t: Table, column: str, setkey: str) -> tuple[str, str]:
    base = f"{derived_dir(t)}/ann-{column}-{setkey}"
    return f"{base}.faiss", f"{base}.json"


def _new_index(faiss, dim: int, config: AnnConfig):
    if config.storage == "sq8":
        inner = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, config.m, faiss.METRIC_INNER_PRODUCT)
    else:
        inner = faiss.IndexHNSWFlat(dim, config.m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = config.ef_construction
    return faiss.IndexIDMap(inner)


def _add(index, matrix: VectorMatrix, start: int, stop: int) -> None:
    inner = _inner(index)
    if not inner.is_trained:                    # sq8: learn the value ranges from a sample
        sample = np.asarray(matrix.vectors[:min(stop, 100_000)], dtype=np.float32)
        index.train(sample / np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12))
    for lo in range(start, stop, BUILD_ROWS):
        hi = min(stop, lo + BUILD_ROWS)
        x = np.asarray(matrix.vectors[lo:hi], dtype=np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)     # cosine = inner product
        index.add_with_ids(np.ascontiguousarray(x), np.arange(lo, hi, dtype=np.int64))


def _inner(index):
    import faiss
    return faiss.downcast_index(index.index)


@dataclass
class AnnIndex:
    index: object                 # faiss IndexIDMap over an HNSW index
    rows: int                     # matrix rows 0..rows-1 are in it
    setkey: str                   # the shard list it covers
    config: AnnConfig


def _open(t: Table, column: str, setkey: str, meta: dict) -> AnnIndex:
    faiss = require_faiss()
    path, _ = _paths(t, column, setkey)
    VERIFIED.check(t.fs, path, meta["bytes"], meta["sha256"], "derived ann index")
    return AnnIndex(faiss.read_index(path), int(meta["rows"]), setkey, AnnConfig(**meta["config"]))


def _metas(t: Table, column: str) -> list[tuple[str, dict]]:
    out = []
    for base in t.fs.listdir(derived_dir(t)):
        if base.startswith(f"ann-{column}-") and base.endswith(".json"):
            path = f"{derived_dir(t)}/{base}"
            try:
                meta = mf.load(path, t.fs.read_bytes(path), ANN_FORMAT, "ann index")
            except StoreError:
                continue
            out.append((base[len(f"ann-{column}-"):-len(".json")], meta))
    return out


def _covering(t: Table, matrix: VectorMatrix) -> tuple[str, dict] | None:
    """The index over the longest prefix of the matrix's shard list (None: none usable)."""
    want = [tuple(s[:2]) for s in matrix.shards]
    best = None
    for setkey, meta in _metas(t, matrix.column):
        have = [tuple(s[:2]) for s in meta["shards"]]
        if have == want[:len(have)] and (best is None or len(have) > len(best[1]["shards"])):
            best = (setkey, meta)
    return best


def build_index(t: Table, matrix: VectorMatrix, config: AnnConfig = AnnConfig(),
                rebuild: bool = False) -> dict:
    """Build (or extend) the index for the matrix's shard set; returns what was done and how long it took."""
    faiss = require_faiss()
    if not t.fs.local:
        raise StoreError(t.dir, "a vector index is kept beside a local store only (object stores: exact search)")
    started = time.perf_counter()
    with commit_lock(t.fs, f"{derived_dir(t)}/.ann.lock", timeout=3600):   # builds take minutes at 10⁶ rows
        base = None if rebuild else _covering(t, matrix)
        if base is not None and base[0] == matrix.setkey and AnnConfig(**base[1]["config"]) == config:
            return {"action": "cached", "rows": int(base[1]["rows"]), "seconds": 0.0}
        if base is not None and AnnConfig(**base[1]["config"]) == config:
            try:
                ann, action = _open(t, matrix.column, base[0], base[1]), "extended"
            except (CorruptShard, NotFound):
                ann, action = None, "rebuilt"
        else:
            ann, action = None, "built"
        index = ann.index if ann is not None else _new_index(faiss, matrix.vectors.shape[1], config)
        start = ann.rows if ann is not None else 0
        faiss.omp_set_num_threads(config.build_threads or os.cpu_count() or 1)
        try:
            _add(index, matrix, start, len(matrix))
        finally:
            faiss.omp_set_num_threads(config.search_threads)
        path, meta_path = _paths(t, matrix.column, matrix.setkey)
        tmp = f"{derived_dir(t)}/{TMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)}"
        try:
            faiss.write_index(index, tmp)
            size, sha = file_sha256(t.fs, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        meta = {**mf.header(ANN_FORMAT), "table": t.name, "fingerprint": t.fingerprint, "column": matrix.column,
                "rows": len(matrix), "shards": [list(s) for s in matrix.shards], "config": asdict(config),
                "bytes": size, "sha256": sha, "created": mf.utcnow()}
        t.fs.write_atomic(meta_path, mf.dump(meta))
        for setkey, _ in _metas(t, matrix.column):
            if setkey != matrix.setkey:
                for p in _paths(t, matrix.column, setkey):
                    t.fs.delete(p)
    return {"action": action, "rows": len(matrix), "added": len(matrix) - start,
            "seconds": round(time.perf_counter() - started, 3)}


class WarmIndexes:
    """Process-wide: the index covering each table's matrix, reloaded when a newer one appears."""

    def __init__(self):
        self._cache: dict[tuple, AnnIndex | None] = {}
        self._lock = threading.Lock()

    def get(self, t: Table, matrix: VectorMatrix) -> AnnIndex | None:
        key = (t.fs.url, t.name, t.fingerprint, matrix.column, matrix.setkey)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        ann = None
        if t.fs.local and have_faiss():
            found = _covering(t, matrix)
            if found is not None:
                try:
                    ann = _open(t, matrix.column, *found)
                except (CorruptShard, NotFound, FormatError, KeyError, TypeError):
                    ann = None                     # damaged or gone: exact search until rebuilt
        with self._lock:
            self._cache[key] = ann
        return ann

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


WARM_INDEXES = WarmIndexes()


def search(t: Table, matrix: VectorMatrix, queries, k: int, rows: np.ndarray | None = None,
           exact: bool = False, config: AnnConfig | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-k cosine: (Q, k) rows, (Q, k) exact scores, and "indexed" or "exact" (which path answered).

    `rows`: search only these matrix rows (e.g. a corpus's documents).
    """
    ann = None if exact else WARM_INDEXES.get(t, matrix)
    if ann is None or len(matrix) < (config or ann.config).min_rows:
        return (*exact_topk(matrix, queries, k, rows, config or AnnConfig()), "exact")
    cfg = config or ann.config
    faiss = require_faiss()
    faiss.omp_set_num_threads(cfg.search_threads)
    q = matrix.normalized(queries)                                                       # (Q, D)
    inner = _inner(ann.index)
    inner.hnsw.efSearch = max(cfg.ef_search, k * cfg.rerank)
    allowed = None if rows is None else _mask(rows, len(matrix))
    _, cand = ann.index.search(np.ascontiguousarray(q), k * cfg.rerank)                  # (Q, k*rerank)
    tail = np.arange(ann.rows, len(matrix))        # rows committed since the index was built: exact
    out_rows = np.zeros((len(q), k), np.int64)
    out_scores = np.zeros((len(q), k), np.float32)
    for i in range(len(q)):
        c = np.concatenate([cand[i][cand[i] >= 0], tail])
        if allowed is not None:
            c = c[allowed[c]]
        if len(c) < k and (rows is None or len(rows) > len(c)):
            r, s = matrix.topk(q[i:i + 1], k, rows)            # too few candidates survive: exact
            out_rows, out_scores = _put(out_rows, out_scores, i, r[0], s[0], k)
            continue
        s = matrix.scores(q[i:i + 1], c)[0]
        best = np.argsort(-s, kind="stable")[:k]
        out_rows, out_scores = _put(out_rows, out_scores, i, c[best], s[best], k)
    return out_rows, out_scores, "indexed"


def exact_topk(matrix: VectorMatrix, queries, k: int, rows: np.ndarray | None,
               config: AnnConfig) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: faiss's brute-force kNN over the mapped matrix where it applies (unit
    rows, no restriction; 2x numpy's matrix product here), else the matrix's numpy scan."""
    if rows is not None or not matrix.unit or len(matrix) <= k or not have_faiss():
        return matrix.topk(queries, k, rows)
    import faiss
    faiss.omp_set_num_threads(config.search_threads)
    q = np.ascontiguousarray(matrix.normalized(queries))
    scores, idx = faiss.knn(q, matrix.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return idx.astype(np.int64), scores.astype(np.float32)


_MASKS: list[tuple[np.ndarray, np.ndarray]] = []       # (rows, mask): callers reuse their rows arrays


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    """(n,) bool: which matrix rows a restricted search may return (kept for the last few `rows`)."""
    for held, mask in _MASKS:
        if held is rows and len(mask) == n:
            return mask
    mask = np.zeros(n, bool)
    mask[rows] = True
    _MASKS.insert(0, (rows, mask))
    del _MASKS[8:]
    return mask


def _put(rows, scores, i, r, s, k):
    if len(r) < k:                     # fewer rows than k in all: shrink the result to what exists
        rows, scores = rows[:, :len(r)], scores[:, :len(r)]
    rows[i, :len(r)] = r
    scores[i, :len(r)] = s
    return rows, scores

"""Approximate nearest neighbours over a table's matrix: an IVF-SQ8 index, re-ranked exactly.

    index = build_index(table, matrix)             # `embcache index bert_features`
    rows, scores, how = search(table, matrix, q, k=10)   # indexed where an index exists, else exact

Optional: faiss comes with `pip install 'embcache[ann]'`; without it, or below
`AnnConfig.min_rows` rows, search is the exact one (storage/matrix.py), which is also
what `exact=True` asks for.

The index (storage/index_build.py, files: storage/index_files.py) clusters the unit rows
(k-means, `nlist` clusters) and keeps each row as 8-bit codes with its matrix row as id:
about a quarter of the float32 matrix, which stays the only float32 copy. A query scans
the `nprobe` nearest clusters' codes, takes k × `rerank` candidates and re-scores them
exactly from the memory-mapped matrix, so scores are exact and only recall is approximate.
`nprobe` is measured when the index is built: the smallest that reaches
`target_recall` on stored rows.

Keyed like the matrix by the shard list (or, after compaction, the row keys) it covers.
Commits only append rows, so an index of the first rows stays valid for them: search
uses it and scans the rows added since exactly (no query waits for a build), and
`build_index` adds only the new rows, as a delta segment beside the untouched base.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from .errors import StoreError
from .index_build import build_index, covering, load_segments
from .index_files import AnnConfig, have_faiss, meta_path, metas, require_faiss
from .index_search import candidates, exact_topk, rerank
from .matrix import VectorMatrix
from .table import Table

__all__ = [
    "WARM_INDEXES",
    "AnnConfig",
    "AnnIndex",
    "WarmIndexes",
    "build_index",
    "exact_topk",
    "have_faiss",
    "require_faiss",
    "search",
]

log = logging.getLogger(__name__)


@dataclass
class AnnIndex:
    segments: list                # faiss IndexIVFScalarQuantizer: the base, then deltas; ids = matrix rows
    rows: int                     # matrix rows 0..rows-1 are in it
    setkey: str                   # the shard list it was built for
    nprobe: int                   # clusters scanned per query (measured at build, or configured)
    config: AnnConfig


class WarmIndexes:
    """The loaded index covering each table's matrix (one per matrix shard set), reloaded when a
    newer one appears. The process-wide one is WARM_INDEXES; a Store may keep its own."""

    def __init__(self, absent_recheck_s: float = 10.0):
        self.absent_recheck_s = absent_recheck_s       # "no usable index" is looked at again this late
        self._cache: dict[tuple, tuple[AnnIndex | None, float]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def get(self, t: Table, matrix: VectorMatrix) -> AnnIndex | None:
        key = (t.fs.url, t.name, t.fingerprint, matrix.column, matrix.setkey)
        with self._lock:
            ann, when = self._cache.get(key, (None, None))
        if when is not None and (ann is not None or time.monotonic() - when < self.absent_recheck_s):
            return ann
        ann = self._load(t, matrix) if t.fs.local and have_faiss() else None
        with self._lock:
            self._cache[key] = (ann, time.monotonic())
        return ann

    def _load(self, t: Table, matrix: VectorMatrix, tries: int = 2) -> AnnIndex | None:
        found, bad = metas(t, matrix.column)
        hit = covering(t, matrix, found)
        if hit is None:
            for path, why in bad:
                self._warn(path, why)
            return None
        setkey, meta = hit
        try:
            segments = load_segments(t, meta)
        except (StoreError, RuntimeError) as e:       # damaged or gone: exact search until rebuilt
            if tries > 1 and not os.path.exists(meta_path(t, matrix.column, setkey)):
                return self._load(t, matrix, tries - 1)      # a build replaced it meanwhile: look again
            self._warn(getattr(e, "path", setkey), getattr(e, "reason", str(e)))
            return None
        return AnnIndex(segments, int(meta["rows"]), setkey, int(meta["nprobe"]), AnnConfig(**meta["config"]))

    def _warn(self, path: str, why: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("vector index %s is damaged (%s): searching exactly until `embcache index` rebuilds it",
                        path, why)

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


WARM_INDEXES = WarmIndexes()


def search(t: Table, matrix: VectorMatrix, queries, k: int, rows: np.ndarray | None = None,
           exact: bool = False, config: AnnConfig | None = None,
           indexes: WarmIndexes | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Top-k cosine: (Q, k) rows, (Q, k) exact scores, and "indexed" or "exact" (which path answered).

    `rows`: search only these matrix rows (e.g. a corpus's documents). `config` overrides the
    index's own settings (nprobe, rerank, min_rows); `indexes`: the loaded-index cache to use.
    """
    ann = None if exact else (indexes or WARM_INDEXES).get(t, matrix)
    cfg = config or (ann.config if ann is not None else AnnConfig())
    if ann is None or len(matrix) < cfg.min_rows:
        return (*exact_topk(matrix, queries, k, rows, cfg), "exact")
    require_faiss().omp_set_num_threads(cfg.search_threads)
    nprobe = cfg.nprobe or ann.nprobe
    q = matrix.normalized(queries)                                                       # (Q, D)
    bits, allowed = None, None
    if rows is not None:
        if len(rows) * ann.segments[0].nlist <= len(matrix) * nprobe:   # fewer rows than a probe scans: exact
            return (*exact_topk(matrix, q, k, rows, cfg), "exact")
        allowed, bits = _mask(rows, len(matrix))
    cand = candidates(ann.segments, q, k * cfg.rerank, nprobe, bits)                     # (Q, k*rerank)
    tail = np.arange(ann.rows, len(matrix))        # rows committed since the index was built: exact
    if allowed is not None:
        tail = tail[allowed[tail]]
    out_rows = np.zeros((len(q), k), np.int64)
    out_scores = np.zeros((len(q), k), np.float32)
    for i in range(len(q)):
        c = np.concatenate([cand[i][cand[i] >= 0], tail])
        if len(c) < k and (rows is None or len(rows) > len(c)):
            r, s = matrix.topk(q[i:i + 1], k, rows)            # too few candidates survive: exact
            out_rows, out_scores = _put(out_rows, out_scores, i, r[0], s[0], k)
            continue
        r, s = rerank(matrix, q[i:i + 1], c, k)
        out_rows, out_scores = _put(out_rows, out_scores, i, r, s, k)
    return out_rows, out_scores, "indexed"


_MASKS: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []   # (rows, mask, bits): callers reuse rows arrays
_MASKS_LOCK = threading.Lock()


def _mask(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) bool: which matrix rows a restricted search may return, and the same as little-endian
    bits for faiss's IDSelectorBitmap; kept for the last few `rows` arrays."""
    with _MASKS_LOCK:
        for held, mask, bits in _MASKS:
            if held is rows and len(mask) == n:
                return mask, bits
    mask = np.zeros(n, bool)
    mask[rows] = True
    bits = np.packbits(mask, bitorder="little")
    with _MASKS_LOCK:
        _MASKS.insert(0, (rows, mask, bits))
        del _MASKS[8:]
    return mask, bits


def _put(rows, scores, i, r, s, k):
    if len(r) < k:                     # fewer rows than k in all: shrink the result to what exists
        rows, scores = rows[:, :len(r)], scores[:, :len(r)]
    rows[i, :len(r)] = r
    scores[i, :len(r)] = s
    return rows, scores

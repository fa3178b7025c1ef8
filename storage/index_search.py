"""Searching with the vector index: candidates from the IVF, exact re-ranking, exact search, nprobe.

    cand = candidates([base, *deltas], q, n=40, nprobe=24)   # (Q, 40) matrix rows, -1 where fewer
    rows, scores = rerank(matrix, q[i:i + 1], cand[i], k=10)

Only recall is approximate: every returned score is the exact cosine from the matrix.
"""

from __future__ import annotations

import numpy as np

from .index_files import AnnConfig, have_faiss, pad, require_faiss
from .matrix import VectorMatrix

TUNE_QUERIES = 256          # stored rows used as queries when nprobe is measured
TUNE_K = 10


def exact_topk(matrix: VectorMatrix, queries, k: int, rows: np.ndarray | None,
               config: AnnConfig) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: faiss's brute-force kNN over the mapped matrix where it applies (unit
    rows, no restriction; 2x numpy's matrix product here), else the matrix's numpy scan."""
    if rows is not None or not matrix.unit or len(matrix) <= k or not have_faiss():
        return matrix.topk(queries, k, rows)
    faiss = require_faiss()
    faiss.omp_set_num_threads(config.search_threads)
    q = np.ascontiguousarray(matrix.normalized(queries))
    scores, idx = faiss.knn(q, matrix.vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    return idx.astype(np.int64), scores.astype(np.float32)


def candidates(segments: list, q: np.ndarray, n: int, nprobe: int,
               allowed_bits: np.ndarray | None = None) -> np.ndarray:
    """(Q, n) matrix rows the IVF segments rank best for normalized queries q (Q, D); -1 pads.

    The base's clusters are found once (every segment shares them) and each segment scans
    its lists of those clusters (faiss search_preassigned), so a delta costs one list scan,
    not another cluster search; the segments are not merged in memory, where faiss's
    growing lists would take up to twice their size.
    allowed_bits: np.packbits(mask, bitorder="little") of the rows a query may return; the
    scan then skips the others (faiss IDSelectorBitmap) instead of filtering afterwards.
    """
    faiss = require_faiss()
    base = segments[0]
    params = faiss.SearchParametersIVF()
    params.nprobe = max(1, min(nprobe, base.nlist))
    if allowed_bits is not None:
        selector = faiss.IDSelectorBitmap(len(allowed_bits) * 8, faiss.swig_ptr(allowed_bits))
        params.sel = selector                       # `selector` and the bits stay alive until search returns
    x = pad(q, base.d)
    if len(segments) == 1:
        return base.search(x, n, params=params)[1]
    near_d, near = base.quantizer.search(x, params.nprobe)                               # (Q, nprobe)
    found = [_preassigned(faiss, seg, x, n, near, near_d, params) for seg in segments]
    scores = np.concatenate([d for d, _ in found], axis=1)                                # (Q, S*n)
    rows = np.concatenate([i for _, i in found], axis=1)
    scores[rows < 0] = -np.inf
    best = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return np.take_along_axis(rows, best, 1)


def _preassigned(faiss, index, x: np.ndarray, n: int, near: np.ndarray, near_d: np.ndarray, params):
    """index.search_preassigned with search parameters (faiss's Python wrapper refuses them)."""
    d, i = np.empty((len(x), n), np.float32), np.empty((len(x), n), np.int64)
    index.search_preassigned_c(len(x), faiss.swig_ptr(x), n, faiss.swig_ptr(near), faiss.swig_ptr(near_d),
                               faiss.swig_ptr(d), faiss.swig_ptr(i), False, params)
    return d, i


def rerank(matrix: VectorMatrix, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of `cand` for one normalized query q (1, D), by exact cosine: (rows, scores)."""
    s = matrix.scores(q, cand)[0]
    best = np.argsort(-s, kind="stable")[:k]
    return cand[best], s[best]


def nprobe_ladder(nlist: int) -> list[int]:
    """1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, … (steps of about 1.25x) up to nlist."""
    out, p = [], 1
    while p < nlist:
        out.append(p)
        p = p + 1 if p < 8 else int(p * 1.25) // 2 * 2
    return out + [nlist]


def tune_nprobe(index, matrix: VectorMatrix, config: AnnConfig, seed: int = 0) -> tuple[int, float, int]:
    """The smallest nprobe whose recall@10 on stored rows (each a query, itself excluded from both
    answers) reaches config.target_recall: (nprobe, that recall, queries used)."""
    n = len(matrix)
    k = min(TUNE_K, n - 1)
    if k < 1:
        return 1, 1.0, 0
    rows = np.sort(np.random.default_rng(seed).choice(n, min(TUNE_QUERIES, n), replace=False))
    q = matrix.normalized(matrix.vectors[rows])                                           # (S, D)
    truth_rows, _ = exact_topk(matrix, q, k + 1, None, config)
    truth = [set(_without(t, r)[:k].tolist()) for t, r in zip(truth_rows, rows)]
    recall = 0.0
    for nprobe in nprobe_ladder(index.nlist):
        cand = candidates([index], q, k * config.rerank + 1, nprobe)
        hits = 0
        for i, r in enumerate(rows):
            c = _without(cand[i][cand[i] >= 0], r)
            hits += len(set(rerank(matrix, q[i:i + 1], c, k)[0].tolist()) & truth[i])
        recall = hits / (k * len(rows))
        if recall >= config.target_recall:
            return nprobe, recall, len(rows)
    return index.nlist, recall, len(rows)


def _without(rows: np.ndarray, row: int) -> np.ndarray:
    return rows[rows != row]

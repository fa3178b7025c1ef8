"""Building the vector index: train and fill an IVF-SQ8 index, measure its nprobe, extend, merge.

    done = build_index(table, matrix)     # `embcache index bert_features`
    done["action"]                        # built | extended | merged | reused | cached | rebuilt

- built: k-means clusters (nlist) and 8-bit value ranges are trained on a sample of
  the (unit) rows, every row is added, nprobe is measured on stored rows, and three
  files are written: the trained empty index (template), the base, the .json.
- extended: the matrix gained rows (a commit added shards): only they are added, to a
  copy of the template, written as a delta segment; the base is not read or rewritten.
- merged: when the deltas would hold more than `merge_fraction` of the base's rows, or
  number more than MAX_DELTAS, base and deltas become one new base (a copy of the index
  bytes: no training, no re-assignment).
- reused: the shard list changed but the rows did not (compaction keeps keys and order,
  checked by the keys' sha256 per segment): the same segments under the new shard set.
- cached: nothing to do, after every file of the index was checked (sha256).
- rebuilt: the index was damaged (a file missing or changed, the .json edited): built anew.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict

import numpy as np

from . import manifest as mf
from .errors import StoreError
from .index_files import (
    ANN_FORMAT,
    AnnConfig,
    keys_sha256,
    meta_path,
    metas,
    pad,
    padded,
    read_segment,
    remove_unreferenced,
    require_faiss,
    segment_problem,
    write_meta,
    write_segment,
)
from .index_search import tune_nprobe
from .lock import commit_lock
from .matrix import VectorMatrix, derived_dir
from .table import Table

BUILD_ROWS = 65_536          # rows normalized and added per faiss call (bounded memory)
TRAIN_PER_LIST = 40          # k-means sample: rows per cluster (faiss warns under 39)
KMEANS_ITERATIONS = 10
MAX_DELTAS = 8               # a query scans each segment's lists: past this many deltas they are merged


def auto_nlist(rows: int) -> int:
    """4·√rows rounded to a power of 2, at most rows / 39 (faiss's k-means minimum per cluster)."""
    if rows < 78:
        return 1
    want = 2 ** round(math.log2(4 * math.sqrt(rows)))
    return int(min(want, 2 ** int(math.log2(rows // 39))))


def unit_rows(matrix: VectorMatrix, lo: int, hi: int, width: int) -> np.ndarray:
    """Rows lo..hi-1, unit length (cosine = inner product), widened to the index's width."""
    x = np.asarray(matrix.vectors[lo:hi], dtype=np.float32)
    return pad(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), width)


def add_rows(index, matrix: VectorMatrix, lo: int, hi: int) -> None:
    for start in range(lo, hi, BUILD_ROWS):
        stop = min(hi, start + BUILD_ROWS)
        index.add_with_ids(unit_rows(matrix, start, stop, index.d), np.arange(start, stop, dtype=np.int64))


def trained(matrix: VectorMatrix, nlist: int, seed: int = 0):
    """An empty IVF-SQ8 index (inner product) with clusters and value ranges fit to a row sample."""
    faiss = require_faiss()
    width = padded(matrix.vectors.shape[1])
    index = faiss.index_factory(width, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITERATIONS
    n = len(matrix)
    sample = np.sort(np.random.default_rng(seed).choice(n, min(n, max(TRAIN_PER_LIST * nlist, 10_000)),
                                                        replace=False))
    x = np.asarray(matrix.vectors[sample], dtype=np.float32)
    index.train(pad(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), width))
    return index


def _checked(t: Table, meta: dict, full: bool) -> str | None:
    """Why an index's segments cannot be used (first problem), or None."""
    for seg in meta["segments"]:
        why = segment_problem(t, seg, full)
        if why:
            return f"{seg['file']}: {why}"
    return None


def covering(t: Table, matrix: VectorMatrix, found: list[tuple[str, dict]]) -> tuple[str, dict] | None:
    """The index whose rows are the first rows of the matrix, the most rows first: its shard list
    starts the matrix's, or (after compaction) each segment's keys are the matrix's keys there."""
    want = [tuple(s[:2]) for s in matrix.shards]
    fits = [(k, m) for k, m in found if m["rows"] <= len(matrix) and m["dim"] == matrix.vectors.shape[1]]
    fits.sort(key=lambda km: -km[1]["rows"])
    for setkey, meta in fits:
        have = [tuple(s[:2]) for s in meta["shards"]]
        if have == want[:len(have)]:
            return setkey, meta
    for setkey, meta in fits:
        if all(seg["keys_sha256"] == keys_sha256(matrix.keys[seg["lo"]:seg["hi"]])
               for seg in meta["segments"] if seg["role"] != "template"):
            return setkey, meta
    return None


def build_index(t: Table, matrix: VectorMatrix, config: AnnConfig = AnnConfig(),
                rebuild: bool = False) -> dict:
    """Build, extend, merge or reuse the index for the matrix's rows: what was done and how long it took.

    Returns {"action", "rows", "added", "seconds", "nprobe", "segments"} and, where it applies,
    "recall" (measured while choosing nprobe) and "damaged" (why the old index was not used).
    """
    faiss = require_faiss()
    if not t.fs.local:
        raise StoreError(t.dir, "a vector index is kept beside a local store only (object stores: exact search)")
    if len(matrix) == 0:
        raise StoreError(t.dir, f"{t.name} has no rows to index")
    started = time.perf_counter()
    t.fs.makedirs(derived_dir(t))
    with commit_lock(t.fs, f"{derived_dir(t)}/.ann.lock", timeout=3600):   # builds take minutes at 10⁶ rows
        found, bad = metas(t, matrix.column)
        damaged = "; ".join(f"{os.path.basename(p)}: {why}" for p, why in bad) or None
        base = None if rebuild else covering(t, matrix, found)
        if base is not None and not AnnConfig(**base[1]["config"]).built_alike(config):
            base = None
        if base is not None:
            done = base[1]["rows"] == len(matrix) and base[0] == matrix.setkey
            why = _checked(t, base[1], full=done)          # "cached" hashes all; an extension stats
            if why:
                base, damaged = None, why
        faiss.omp_set_num_threads(config.build_threads or os.cpu_count() or 1)
        try:
            if base is None:
                meta, action = _build(t, matrix, config), ("rebuilt" if damaged else "built")
            else:
                meta, action = _extend(t, matrix, config, base[0], base[1])
        finally:
            faiss.omp_set_num_threads(config.search_threads)
        remove_unreferenced(t, matrix.column, meta)
    out = {"action": action, "rows": len(matrix), "added": len(matrix) - (0 if base is None else base[1]["rows"]),
           "seconds": round(time.perf_counter() - started, 3), "nprobe": meta["nprobe"], "nlist": meta["nlist"],
           "segments": sum(s["role"] != "template" for s in meta["segments"])}
    if action in ("built", "rebuilt") and meta.get("tuned"):
        out["recall"] = meta["tuned"]["recall"]
    if damaged and action == "rebuilt":
        out["damaged"] = damaged
    return out


def _meta(t: Table, matrix: VectorMatrix, config: AnnConfig, segments: list[dict], nlist: int, nprobe: int,
          tuned: dict | None) -> dict:
    return {**mf.header(ANN_FORMAT), "table": t.name, "fingerprint": t.fingerprint, "column": matrix.column,
            "setkey": matrix.setkey, "kind": "ivf_sq8", "dim": int(matrix.vectors.shape[1]),
            "width": padded(matrix.vectors.shape[1]), "nlist": nlist, "nprobe": nprobe, "tuned": tuned,
            "rows": len(matrix), "shards": [list(s) for s in matrix.shards], "config": asdict(config),
            "segments": segments, "created": mf.utcnow()}


def _build(t: Table, matrix: VectorMatrix, config: AnnConfig) -> dict:
    n, column = len(matrix), matrix.column
    nlist = min(config.nlist or auto_nlist(n), n)
    index = trained(matrix, nlist)
    template = write_segment(t, column, index, "template", 0, 0, None)
    add_rows(index, matrix, 0, n)
    tuned = None
    if config.nprobe:
        nprobe = min(config.nprobe, nlist)
    else:
        nprobe, recall, queries = tune_nprobe(index, matrix, config)
        tuned = {"recall": round(recall, 4), "queries": queries, "k": 10, "target": config.target_recall}
    base = write_segment(t, column, index, "base", 0, n, matrix.keys[:n])
    return write_meta(t, meta_path(t, column, matrix.setkey),
                      _meta(t, matrix, config, [template, base], nlist, nprobe, tuned))


def _extend(t: Table, matrix: VectorMatrix, config: AnnConfig, setkey: str, old: dict) -> tuple[dict, str]:
    """Add the matrix's rows past old["rows"] as a delta (or merge everything into a new base)."""
    n, column, have = len(matrix), matrix.column, old["rows"]
    segments = list(old["segments"])
    if have == n:
        if setkey == matrix.setkey and old["config"] == asdict(config):
            return old, "cached"
        action = "reused" if setkey != matrix.setkey else "cached"
    else:
        base_rows = sum(s["hi"] - s["lo"] for s in segments if s["role"] == "base")
        delta_rows = sum(s["hi"] - s["lo"] for s in segments if s["role"] == "delta") + n - have
        template = next(s for s in segments if s["role"] == "template")
        deltas = sum(s["role"] == "delta" for s in segments)
        if delta_rows > config.merge_fraction * base_rows or deltas >= MAX_DELTAS:
            index = _merged(t, segments)
            add_rows(index, matrix, have, n)
            segments = [template, write_segment(t, column, index, "base", 0, n, matrix.keys[:n])]
            action = "merged"
        else:
            index = read_segment(t, template)
            add_rows(index, matrix, have, n)
            segments.append(write_segment(t, column, index, "delta", have, n, matrix.keys[have:n]))
            action = "extended"
    meta = _meta(t, matrix, config, segments, old["nlist"], old["nprobe"], old.get("tuned"))
    return write_meta(t, meta_path(t, column, matrix.setkey), meta), action


def _merged(t: Table, segments: list[dict]):
    """The base and every delta as one in-memory index (faiss merge_from: inverted lists appended)."""
    parts = [s for s in segments if s["role"] in ("base", "delta")]
    index = read_segment(t, parts[0])
    for seg in parts[1:]:
        index.merge_from(read_segment(t, seg), 0)
    return index


def load_segments(t: Table, meta: dict) -> list:
    """What a query searches: the base, then each delta, every file checked once per process."""
    return [read_segment(t, s) for s in meta["segments"] if s["role"] == "base"] + \
        [read_segment(t, s) for s in meta["segments"] if s["role"] == "delta"]

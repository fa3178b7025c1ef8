"""Recall against latency of the vector index, on real and synthetic sets (issue 27 items 3-4).

    nice python benchmarks/query.py --recall glove minilm synthetic --recall-n 1000000

For each set (benchmarks/ann_sets.py: 1,000 held-out queries, exact top-10 as truth):

- embcache: the first 99 % of the rows written through the store (`Table.write`, 50,000-row
  shards), `build_index` at its defaults (timed), then the last 1 % committed and the index
  extended (timed: a delta segment); then single queries through `ann.search` (what
  `similar` runs: the IVF-SQ8 scan, exact re-rank from the mapped matrix) at the nprobe the
  build measured, and swept over nprobe;
- faiss HNSW (IndexHNSWFlat, M 32, efConstruction 40: faiss's defaults, embcache's index
  before this one), swept over efSearch, top-10 as faiss returns it;
- faiss HNSW over 8-bit codes (IndexHNSWSQ, same graph, rows padded like embcache's)
  and IVF-PQ fast-scan (4-bit, 2 dimensions per code) with k × 4 / k × 10 candidates
  re-ranked from the same matrix: the other index types issue 27 names;
- faiss IndexFlatIP (exact, 1 thread): the anchor.

Every arm answers the same queries one at a time with one OpenMP thread, as ann-benchmarks
does; recall@10 against the truth, p50 / p99 latency and QPS per point, build seconds and
index bytes per arm. Then a fresh process loads the store's index and measures its memory
(benchmarks/query.py --index-memory), each as growth past the imports over the matrix's
bytes: anonymous (RssAnon: the index, private to the process) and resident in all (RSS:
the index plus the mapped matrix's pages), after 1,000 indexed queries and again after an
exact query has touched every page of the matrix. (USS is printed too, but counts the
matrix's pages only where no other process maps them.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ann_sets
from synthetic_vectors import each as single_queries     # one timer for every query benchmark
import numpy as np
import pyarrow as pa

K = 10
SHARD_ROWS = 50_000
NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
EF_SEARCH = (16, 32, 64, 128, 256, 512)
ARMS = ("embcache", "hnsw_flat", "hnsw_sq8", "ivfpq_fastscan", "flat")


def recall(got, truth) -> float:
    return float(np.mean([len(set(map(int, g)) & set(map(int, t))) / K for g, t in zip(got, truth)]))


def point(times: list[float], got, truth, **params) -> dict:
    ms = np.asarray(times) * 1000
    return {**params, "recall": round(recall(got, truth), 4), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "qps": round(len(ms) / (ms.sum() / 1000), 1)}


def write_rows(table, x: np.ndarray, start: int, stop: int) -> None:
    for lo in range(start, stop, SHARD_ROWS):
        hi = min(stop, lo + SHARD_ROWS)
        keys = [f"{i:064x}" for i in range(lo, hi)]
        table.write(pa.table({"text_sha": keys,
                              "vector": pa.FixedSizeListArray.from_arrays(pa.array(x[lo:hi].ravel()), x.shape[1])}))


# -- embcache through the store ------------------------------------------------------------------
def embcache_arm(name: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, root: Path) -> dict:
    from embcache.storage import FeatureStore, ann, spec
    from embcache.storage.ann import WARM_INDEXES, AnnConfig, build_index
    from embcache.storage.matrix import WarmMatrices
    WARM = WarmMatrices()                                    # the read path a Store owns, here alone

    shutil.rmtree(root, ignore_errors=True)
    table = FeatureStore(root).table("bert_features", spec("ann-bench", 1, {"set": name}), key="text_sha")
    n, first = len(base), len(base) - max(1, len(base) // 100)
    write_rows(table, base, 0, first)
    matrix = WARM.get(table)
    t0 = time.perf_counter()
    built = build_index(table, matrix, AnnConfig(min_rows=0))   # defaults; searched at any size
    build_s = time.perf_counter() - t0
    write_rows(table, base, first, n)                        # +1 %: one more commit
    t0 = time.perf_counter()
    matrix = WARM.get(table)
    matrix_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    extended = build_index(table, matrix, AnnConfig(min_rows=0))
    extend_s = time.perf_counter() - t0
    WARM_INDEXES.forget()
    out = {"build": {**built, "seconds": round(build_s, 2)},
           "extend_plus_1pct": {**extended, "seconds": round(extend_s, 3), "matrix_extend_s": round(matrix_s, 3),
                                "index_extend_vs_build": round(extend_s / build_s, 4)},
           "index_bytes": sum(p.stat().st_size for p in (root / "tables").rglob("ann-*-seg-*.faiss"))}
    search = lambda cfg: (lambda q: ann.search(table, matrix, q, K, config=cfg)[0][0])
    ann.search(table, matrix, queries[0], K)                 # loads (and checks) the index
    assert ann.search(table, matrix, queries[0], K)[2] == "indexed"
    times, got = single_queries(lambda q: ann.search(table, matrix, q, K)[0][0], queries)
    out["default"] = point(times, got, truth, nprobe=extended["nprobe"])
    out["curve"] = []
    for p in [p for p in NPROBES if p <= extended["nlist"]]:
        times, got = single_queries(search(AnnConfig(min_rows=0, nprobe=p)), queries)
        out["curve"].append(point(times, got, truth, nprobe=p))
        if out["curve"][-1]["recall"] >= 0.999:
            break
    out["memory"] = index_memory_in_new_process(root, queries)
    return out


def index_memory_in_new_process(root: Path, queries: np.ndarray) -> dict:
    np.save(root / "queries.npy", queries)
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("query.py")), "--index-memory", str(root)],
                          capture_output=True, text=True, timeout=1800)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-800:]}


def index_memory(root: str) -> dict:
    """In a fresh process: memory of a process serving indexed queries, over the matrix's bytes."""
    import psutil

    def mb() -> dict:
        info = psutil.Process().memory_full_info()
        out = {"uss": info.uss / 2**20, "rss": info.rss / 2**20}
        with open("/proc/self/status") as f:             # anonymous (heap: the index) and file-backed (the map)
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:")):
                    out[line.split(":")[0].lower()] = int(line.split()[1]) / 1024
        return out

    import faiss  # noqa: F401  (its libraries count as imports, not as the index)
    from embcache.storage import FeatureStore, ann
    from embcache.storage.matrix import WarmMatrices
    WARM = WarmMatrices()                                    # the read path a Store owns, here alone
    t = FeatureStore(root).open("bert_features")
    queries = np.load(Path(root) / "queries.npy")
    start = mb()
    matrix = WARM.get(t)
    for q in queries:
        assert ann.search(t, matrix, q, K)[2] == "indexed"
    indexed = mb()
    ann.search(t, matrix, queries[0], K, exact=True)        # touches every page of the matrix
    touched = mb()
    matrix_mb = matrix.vectors.nbytes / 2**20
    ratio = lambda m, key: round((m[key] - start[key]) / matrix_mb, 3)
    return {"matrix_mb": round(matrix_mb, 1), "after_imports_mb": {k: round(v, 1) for k, v in start.items()},
            "after_indexed_queries_mb": {k: round(v, 1) for k, v in indexed.items()},
            "after_exact_too_mb": {k: round(v, 1) for k, v in touched.items()},
            "anon_over_matrix": ratio(touched, "rssanon"), "rss_over_matrix_indexed": ratio(indexed, "rss"),
            "rss_over_matrix_all_touched": ratio(touched, "rss"), "uss_over_matrix_all_touched": ratio(touched, "uss")}


# -- faiss baselines on the same rows ----------------------------------------------------------------
def faiss_arm(arm: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    import faiss
    from embcache.storage.index_build import auto_nlist
    from embcache.storage.index_files import pad, padded

    d = base.shape[1]
    width = padded(d) if arm in ("hnsw_sq8",) else d
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    rerank = 1
    if arm == "flat":
        index = faiss.IndexFlatIP(d)
    elif arm == "hnsw_flat":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    elif arm == "hnsw_sq8":
        index, rerank = faiss.IndexHNSWSQ(width, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT), 4
    else:
        nlist = auto_nlist(len(base))
        codes = d // 2 if d < 128 else d // 4            # 4-bit codes of 2 (or 4) dimensions each
        index = faiss.index_factory(d, f"IVF{nlist},PQ{codes}x4fs", faiss.METRIC_INNER_PRODUCT)
        rerank = 10
    x = pad(base, width)
    if not index.is_trained:                 # IVF: k-means as embcache samples it; SQ: value ranges
        take = min(len(base), max(32 * getattr(index, "nlist", 0), 100_000))
        index.train(x[np.sort(np.random.default_rng(0).choice(len(base), take, replace=False))])
    index.add(x)
    build_s = time.perf_counter() - t0
    size = len(faiss.serialize_index(index))
    faiss.omp_set_num_threads(1)

    def query(q):
        cand = index.search(pad(q[None], width), K * rerank)[1][0]
        if rerank == 1:
            return cand
        cand = cand[cand >= 0]
        return cand[np.argsort(-(base[cand] @ q))[:K]]

    out = {"build_s": round(build_s, 2), "index_bytes": size, "candidates": K * rerank, "curve": []}
    if arm == "flat":
        times, got = single_queries(query, queries)
        out["curve"].append(point(times, got, truth))
        return out
    for p in (EF_SEARCH if arm.startswith("hnsw") else NPROBES):
        if arm.startswith("hnsw"):
            index.hnsw.efSearch = max(p, K * rerank)
        elif p > index.nlist:
            break
        else:
            index.nprobe = p
        times, got = single_queries(query, queries)
        out["curve"].append(point(times, got, truth, **({"ef_search": p} if arm.startswith("hnsw") else {"nprobe": p})))
        if out["curve"][-1]["recall"] >= 0.999:
            break
    return out


def run(sets: list[str], n_synthetic: int, workdir: Path, arms: tuple[str, ...] = ARMS,
        limit: int | None = None) -> dict:
    """limit: the first rows of GloVe and MiniLM only (a quick run)."""
    report = {}
    for name in sets:
        print(f"== recall: {name}", flush=True)
        base, queries, truth = ann_sets.synthetic(n_synthetic) if name == "synthetic" \
            else ann_sets.SETS[name](rows=limit)
        result = {"rows": len(base), "dim": base.shape[1], "queries": len(queries),
                  "matrix_mb": round(base.nbytes / 2**20, 1)}
        for arm in arms:
            t0 = time.perf_counter()
            result[arm] = embcache_arm(name, base, queries, truth, workdir / f"ann-{name}") if arm == "embcache" \
                else faiss_arm(arm, base, queries, truth)
            result[arm]["arm_s"] = round(time.perf_counter() - t0, 1)
            print(json.dumps({arm: result[arm]}), flush=True)
        report[name] = result
        shutil.rmtree(workdir / f"ann-{name}", ignore_errors=True)
    return report


def summary(report: dict) -> str:
    """The curves as text (one line per point), and per arm the fastest point at recall@10 ≥ 0.95."""
    lines = []
    for name, result in report.items():
        lines.append(f"== {name}: {result['rows']:,} × {result['dim']}, {result['queries']:,} queries")
        for arm in ARMS:
            if arm not in result:
                continue
            a = result[arm]
            build = a["build"]["seconds"] if arm == "embcache" else a["build_s"]
            lines.append(f"{arm}: build {build} s, index {a['index_bytes'] / 2**20:.1f} MB")
            for p in a["curve"]:
                knob = ", ".join(f"{k} {p[k]}" for k in ("nprobe", "ef_search") if k in p)
                lines.append(f"   {knob:>16}  recall {p['recall']:.4f}  p50 {p['p50_ms']:.3f} ms  "
                             f"p99 {p['p99_ms']:.3f} ms  {p['qps']:,.0f} QPS")
            ok = [p for p in a["curve"] if p["recall"] >= 0.95]
            if ok:
                best = min(ok, key=lambda p: p["p50_ms"])
                lines.append(f"   fastest at recall ≥ 0.95: p50 {best['p50_ms']:.3f} ms (recall {best['recall']:.4f})")
            if arm == "embcache":
                d, e, m = a["default"], a["extend_plus_1pct"], a["memory"]
                lines.append(f"   default (nprobe {d['nprobe']} measured at build): recall {d['recall']:.4f}, "
                             f"p50 {d['p50_ms']:.3f} ms; +1 % rows: {e['seconds']} s = "
                             f"{e['index_extend_vs_build']:.2%} of the build; memory over the matrix: "
                             f"anonymous {m.get('anon_over_matrix')}, RSS {m.get('rss_over_matrix_all_touched')}")
    return "\n".join(lines)


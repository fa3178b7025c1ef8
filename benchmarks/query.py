"""Querying the cache at scale (issue 19): the warm read path, the vector index, `embcache serve`.

    flock /tmp/embcache-bench.lock .venv/bin/python benchmarks/query.py --sizes 10000 100000 1000000
    flock /tmp/embcache-bench.lock .venv/bin/python benchmarks/query.py --recall glove minilm synthetic

--recall measures the index's recall against latency on GloVe-400k, MiniLM sentence vectors
and the synthetic set beside faiss's other index types (benchmarks/ann_recall.py) and
writes benchmarks/results/query_recall.json; nothing else runs then.

For each N: N clustered 384-d unit vectors (1,000 Gaussian clusters) keyed by a text hash,
written through the store (`Table.write`, 50,000-row shards) as a bert_features table.
Then, on the same matrix and in the same process, 200 queries (stored vectors plus noise):

- lookup of one id: embcache's warm path (Store.reads.vectors: fingerprint, matrix,
  binary search) vs the cold path it replaces (Table.lookup: read and hash the shard);
- exact top-10: numpy `X @ q` + argpartition on the matrix in memory (the baseline, at
  its defaults, and with one BLAS thread), faiss IndexFlatIP (1 thread), embcache's exact search (ann.search(exact=True), on the
  memory-mapped matrix) and the public topk_cosine call (opens the table each call);
- indexed top-10: the IVF-SQ8 index built by `build_index` (nprobe measured at build), exact re-rank;
  recall@10 against the numpy result; build time; then +1 % rows committed and the time to
  extend the matrix and the index, against the full build;
- a fresh process (files in the page cache, nothing mapped yet): first lookup, first exact
  and first indexed top-10, then RSS after 200 indexed and 20 exact queries, beside the
  matrix's bytes;
- `embcache serve` on loopback: 32 concurrent clients (aiohttp, another process) for 20 s
  each on features-by-id and similar-by-vector: QPS, p50, p99.
Latencies are p50 / p99 in ms over single queries. Results: --out (JSON) and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from synthetic_vectors import DIM, each, vectors  # noqa: F401  (benchmarks/ is on sys.path as a script)

ROOT = Path(__file__).resolve().parent.parent
EMBCACHE = str(ROOT / ".venv" / "bin" / "embcache")
SHARD_ROWS, K = 50_000, 10
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "query.json"


def keys_for(start: int, stop: int) -> list[str]:
    return [hashlib.sha256(f"doc-{i}".encode()).hexdigest() for i in range(start, stop)]


def rows(start: int, stop: int) -> pa.Table:
    x = vectors(start, stop)
    return pa.table({"text_sha": pa.array(keys_for(start, stop)),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)})


def write(table, start: int, stop: int) -> float:
    t0 = time.perf_counter()
    for lo in range(start, stop, SHARD_ROWS):
        table.write(rows(lo, min(stop, lo + SHARD_ROWS)))
    return time.perf_counter() - t0


def pct(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def recall(got, truth) -> float:
    return float(np.mean([len(set(map(int, g)) & set(map(int, t))) / K for g, t in zip(got, truth)]))


def rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def rss_split_mb() -> dict:
    """RssAnon (private memory) and RssFile (mapped file pages, i.e. shared page cache), MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


# -- one size, in this process ---------------------------------------------------------------------
def bench_size(n: int, workdir: Path, queries: int) -> dict:
    import faiss

    import embcache
    from embcache.storage import FeatureStore, spec
    from embcache.storage.ann import AnnConfig, WARM_INDEXES, build_index
    from embcache.storage import ann
    from embcache.storage.matrix import WarmMatrices
    from embcache.storage.query import topk_cosine
    WARM = WarmMatrices()

    root = workdir / f"store-{n}"
    shutil.rmtree(root, ignore_errors=True)
    store = FeatureStore(root)
    table = store.table("bert_features", spec("bench", 1, {"n": n}), key="text_sha")
    out: dict = {"n": n, "matrix_mb": round(n * DIM * 4 / 2**20, 1)}
    out["write_s"] = round(write(table, 0, n), 2)
    t0 = time.perf_counter()
    m = WARM.get(table)
    out["matrix_build_s"] = round(time.perf_counter() - t0, 2)
    X = np.array(m.vectors)                                     # the baselines' matrix, in memory
    rng = np.random.default_rng(1)
    pick = rng.integers(0, n, queries)
    Q = X[pick] + 0.3 * rng.standard_normal((queries, DIM), dtype=np.float32) / np.sqrt(DIM)
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    ids = [hashlib.sha256(f"doc-{i}".encode()).hexdigest() for i in pick]
    fp = table.fingerprint

    # lookup by id
    reads = embcache.Store(store).reads                          # the read path every reader goes through
    reads.vectors("bert_features", fp, ids[:1])
    warm, got = each(lambda key: reads.vectors("bert_features", fp, [key]), ids)
    assert all(np.array_equal(g[0], X[p]) for g, p in zip(got[:20], pick))
    cold, _ = each(lambda key: table.lookup([key], ["vector"]), ids[:20])
    out["lookup"] = {"embcache_warm": pct(warm), "table_lookup_reads_shard": pct(cold)}

    # exact top-10: numpy, faiss flat, embcache
    def numpy_top(q):
        s = X @ q
        idx = np.argpartition(-s, K)[:K]
        return idx[np.argsort(-s[idx])]
    t_np, truth = each(numpy_top, Q)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):                                  # BLAS's threads spin on busy cores
        t_np1, _ = each(numpy_top, Q)
    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlatIP(DIM)
    t0 = time.perf_counter()
    flat.add(X)
    flat_build = time.perf_counter() - t0
    t_flat, flat_res = each(lambda q: flat.search(q[None], K)[1][0], Q)
    t_exact, exact_res = each(lambda q: ann.search(table, m, q, K, exact=True)[0][0], Q)
    t_api, _ = each(lambda q: topk_cosine(store, "bert_features", q, K, exact=True), Q[:50])
    out["exact_top10"] = {"numpy_in_memory": pct(t_np), "numpy_in_memory_1thread": pct(t_np1),
                          "faiss_flat_1thread": {**pct(t_flat), "build_s":
                          round(flat_build, 3), "recall": recall(flat_res, truth)},
                          "embcache_exact": {**pct(t_exact), "recall": recall(exact_res, truth)},
                          "embcache_topk_cosine_api": pct(t_api)}
    out["exact_top10"]["ratio_p50_embcache_vs_numpy"] = round(
        out["exact_top10"]["embcache_exact"]["p50_ms"] / out["exact_top10"]["numpy_in_memory"]["p50_ms"], 3)
    out["exact_top10"]["ratio_p50_embcache_vs_numpy_1thread"] = round(
        out["exact_top10"]["embcache_exact"]["p50_ms"] / out["exact_top10"]["numpy_in_memory_1thread"]["p50_ms"], 3)
    flat.reset()                                                # frees its copy of the matrix
    X = None                                                    # and the baselines' (nothing uses it below)

    # indexed top-10, build, +1 % update
    config = AnnConfig(min_rows=0)
    t0 = time.perf_counter()
    built = build_index(table, m, config)
    build_s = time.perf_counter() - t0
    WARM_INDEXES.forget()
    ann.search(table, m, Q[0], K)                               # loads the index
    t_idx, idx_res = each(lambda q: ann.search(table, m, q, K)[0][0], Q)
    assert ann.search(table, m, Q[0], K)[2] == "indexed"
    sweep = {}
    for nprobe in (4, 8, 16, 32, 64):                          # recall vs latency around the measured nprobe
        cfg = AnnConfig(min_rows=0, nprobe=nprobe)
        t_p, res_p = each(lambda q: ann.search(table, m, q, K, config=cfg)[0][0], Q)
        sweep[nprobe] = {**pct(t_p), "recall": recall(res_p, truth)}
    extra = max(1, n // 100)
    t0 = time.perf_counter()
    write(table, n, n + extra)
    commit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m2 = WARM.get(table)
    extend_matrix_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    extended = build_index(table, m2, config)
    extend_index_s = time.perf_counter() - t0
    out["indexed_top10"] = {**pct(t_idx), "recall": recall(idx_res, truth), "build_s": round(build_s, 2),
                            "nprobe_sweep": sweep,
                            "built": built["action"], "config": {"nlist": built["nlist"], "nprobe": built["nprobe"],
                                                                  "rerank": config.rerank},
                            "update_plus_1pct": {"rows": extra, "commit_s": round(commit_s, 2),
                                                 "matrix_extend_s": round(extend_matrix_s, 2),
                                                 "index_extend_s": round(extend_index_s, 2),
                                                 "action": extended["action"],
                                                 "index_extend_vs_build": round(extend_index_s / build_s, 4)}}
    out["in_process_rss_mb"] = round(rss_mb(), 1)
    return out


# -- a fresh process: cold figures and memory ----------------------------------------------------------
def probe(root: str, n: int) -> dict:
    """Run in a new process: first lookup / exact / indexed query, then RSS after warm queries."""
    base = rss_mb()
    t0 = time.perf_counter()
    import embcache
    from embcache.storage import FeatureStore, Table
    from embcache.storage import ann
    imports = time.perf_counter() - t0
    store = FeatureStore(root)
    key = hashlib.sha256(b"doc-7").hexdigest()
    after_imports = rss_mb()
    t0 = time.perf_counter()
    reads = embcache.Store(store).reads
    fp = reads.current_fingerprint("bert_features")
    reads.vectors("bert_features", fp, [key])
    first_lookup = time.perf_counter() - t0
    m = reads.matrix("bert_features", fp)
    t = Table(store.fs, "bert_features", fp)
    q = vectors(3, 4)[0]
    t0 = time.perf_counter()
    ann.search(t, m, q, K, exact=False)
    first_indexed = time.perf_counter() - t0
    qs = vectors(10, 210) + 0.01
    for qq in qs:
        ann.search(t, m, qq, K)
    rss_indexed = rss_mb()
    t0 = time.perf_counter()
    ann.search(t, m, q, K, exact=True)
    first_exact = time.perf_counter() - t0
    for qq in qs[:20]:
        ann.search(t, m, qq, K, exact=True)
    rss_all = rss_mb()
    split = rss_split_mb()
    matrix_mb = n * DIM * 4 / 2**20
    return {"imports_s": round(imports, 3), "first_lookup_s": round(first_lookup, 3),
            "first_indexed_s": round(first_indexed, 3), "first_exact_s": round(first_exact, 3),
            "rss_python_mb": round(base, 1), "rss_after_imports_mb": round(after_imports, 1),
            "rss_after_indexed_mb": round(rss_indexed, 1), "rss_after_exact_too_mb": round(rss_all, 1),
            "rss_split_after_all_mb": split,
            "anon_over_matrix": round((split.get("RssAnon", 0) - after_imports) / matrix_mb, 3),
            "rss_indexed_over_matrix": round((rss_indexed - after_imports) / matrix_mb, 3),
            "rss_all_over_matrix": round((rss_all - after_imports) / matrix_mb, 3)}


# -- HTTP load on loopback ---------------------------------------------------------------------------
def http_bench(root: Path, n: int, seconds: float, clients: int) -> dict:
    from embcache.storage import FeatureStore, spec
    store = FeatureStore(root)
    if "bench" not in store.corpora():                  # similar searches a corpus: all rows, one snapshot
        keys = keys_for(0, n)
        store.corpus("bench").commit_snapshot(pa.table({"doc_id": keys, "text_sha": keys}))
        docs = store.table("documents", spec("bench-docs", 1, {"n": n}), key="text_sha")
        docs.write(pa.table({"text_sha": keys, "text": [f"document {i}" for i in range(n)]}))
        store.corpus("bench").link("documents", docs.fingerprint)
    import httpx
    from serve import start_serve                   # benchmarks/serve.py: started once /health answers
    server, url = start_serve(root, "--no-warm")
    try:
        rng = random.Random(0)
        ids = [hashlib.sha256(f"doc-{rng.randrange(n)}".encode()).hexdigest() for _ in range(2000)]
        vecs = [v.tolist() for v in vectors(5, 205)]
        warm = httpx.Client(base_url=url, timeout=600)
        warm.get("/features/bert_features", params={"ids": ids[0]}).raise_for_status()   # maps the matrix
        warm.post("/similar", json={"corpus": "bench", "vector": vecs[0], "k": K}).raise_for_status()
        result = {}
        for mode, payloads in (("features", ids), ("similar", vecs)):
            done = subprocess.run([sys.executable, __file__, "--load", url, mode, str(seconds), str(clients)],
                                  input=json.dumps(payloads), capture_output=True, text=True, timeout=seconds + 300)
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            result[mode] = json.loads(done.stdout)
        return {"clients": clients, "seconds": seconds, **result}
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--http-seconds", type=float, default=20.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--http-size", type=int, default=None, help="size served for the HTTP test (default: largest)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/embcache-query-bench"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep", action="store_true", help="keep the stores under --workdir")
    p.add_argument("--recall", nargs="+", choices=["glove", "minilm", "synthetic"],
                   help="recall against latency on these sets only (benchmarks/ann_recall.py)")
    p.add_argument("--recall-n", type=int, default=1_000_000, help="rows of the synthetic set for --recall")
    p.add_argument("--recall-arms", nargs="+", default=None,
                   help="which indexes --recall measures (default: embcache hnsw_flat hnsw_sq8 ivfpq_fastscan flat)")
    p.add_argument("--recall-limit", type=int, default=None, help="first rows of GloVe / MiniLM only (quick run)")
    p.add_argument("--index-memory", help=argparse.SUPPRESS)
    p.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.index_memory:
        import ann_recall
        print(json.dumps(ann_recall.index_memory(args.index_memory)))
        return
    if args.probe:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]))))
        return
    if args.recall:
        recall_main(args)
        return
    if args.load:
        url, mode, seconds, clients = args.load
        from serve import load                  # benchmarks/serve.py's load generator
        print(json.dumps(asyncio.run(load(url, mode, float(seconds), int(clients), json.loads(sys.stdin.read()),
                                          "bench"))))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_before": os.getloadavg()}, "sizes": []}
    for n in args.sizes:
        print(f"== {n:,} vectors", flush=True)
        result = bench_size(n, args.workdir, args.queries)
        done = subprocess.run([sys.executable, __file__, "--probe", str(args.workdir / f"store-{n}"), str(n)],
                              capture_output=True, text=True, timeout=1800)
        result["fresh_process"] = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}
        print(json.dumps(result, indent=1), flush=True)
        report["sizes"].append(result)
    http_n = args.http_size or args.sizes[-1]
    if args.http_seconds > 0:
        print(f"== HTTP, {http_n:,} vectors, {args.clients} clients × {args.http_seconds:g} s", flush=True)
        report["http"] = {"n": http_n, **http_bench(args.workdir / f"store-{http_n}", http_n, args.http_seconds,
                                                    args.clients)}
        print(json.dumps(report["http"], indent=1), flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"wrote {args.out}")


def recall_main(args) -> None:
    import ann_recall
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_before": os.getloadavg()}}
    t0 = time.perf_counter()
    report["sets"] = ann_recall.run(args.recall, args.recall_n, args.workdir,
                                    tuple(args.recall_arms) if args.recall_arms else ann_recall.ARMS,
                                    args.recall_limit)
    report["machine"].update(load_after=os.getloadavg(), seconds=round(time.perf_counter() - t0, 1))
    out = args.out if args.out != DEFAULT_OUT else DEFAULT_OUT.with_name("query_recall.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(ann_recall.summary(report["sets"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

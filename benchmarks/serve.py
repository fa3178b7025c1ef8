"""The query side as users meet it (issues 26, 27): cold `query similar`, loading a matrix, `embcache serve` under load.

    flock /tmp/embcache-bench.lock .venv/bin/python benchmarks/serve.py --store ./embcache-store
    .venv/bin/python benchmarks/serve.py --smoke          # seconds: a tiny synthetic store, 2 s of load

1. Cold `embcache query similar CORPUS TEXT` (the console script, a new process each time,
   files in the page cache): the query encoded through the store's ONNX export without
   torch (pipeline/query_encoder.py), beside its baseline, a new process that encodes the
   same text through torch and transformers (stages.bert.encode_query, the path before) and
   then searches the same Store. Goal: ≤ 3 s on the demo store. Needs --store with a corpus
   whose bert_features were encoded with the onnx backend (the default when onnxruntime is
   installed); skipped otherwise.
2. Loading a table's matrix in a new process, N × 384 synthetic vectors: embcache reads it
   into private memory, checking its sha256 as it reads (a file changed under the server
   cannot kill it); the baseline maps it (np.memmap) after a sha256 pass, as before issue 26.
   Seconds and RSS (anonymous vs file-backed), and the ratio.
3. `embcache serve` on loopback, a load generator in its own process (aiohttp), 8 and 32
   concurrent clients, --seconds each: features by id and similar by vector (exact and, with
   faiss, indexed), QPS, p50, p99; beside the same calls through the Python API in one thread
   (the server's cost over the library's). Goals: p99 at 8 clients ≤ 20 ms (features by id),
   ≤ 50 ms (similar by vector).
Results: --out (JSON) and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
EMBCACHE = str(Path(sys.executable).parent / "embcache")
DIM, K = 384, 10


def pct(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def key(i: int) -> str:
    return hashlib.sha256(f"doc-{i}".encode()).hexdigest()


# -- 1. cold query similar ------------------------------------------------------------------------
TORCH_PATH = """
import sys, time
t0 = time.perf_counter()
import embcache
from embcache.stages.bert import encode_query
store = embcache.open(sys.argv[1])
fp = store.reads.fingerprint_for("bert_features", sys.argv[2])
meta = store.feature_store.open("bert_features", fp).saved_spec()["meta"]
hits = store.similar(sys.argv[2], vector=encode_query(meta, [sys.argv[3]])[0], k=5)
print(hits[0].doc_id)
"""


def cold_similar(store: str, corpus: str, text: str, runs: int) -> dict:
    ours, torch_path = [], []
    first = None
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run([EMBCACHE, "--store", store, "query", "similar", corpus, text, "--k", "5", "--json"],
                              capture_output=True, text=True)
        ours.append(time.perf_counter() - t0)
        if done.returncode:
            return {"skipped": done.stderr.strip()[-300:]}
        first = json.loads(done.stdout)[0]["doc_id"]
        t0 = time.perf_counter()
        base = subprocess.run([sys.executable, "-c", TORCH_PATH, store, corpus, text], capture_output=True, text=True)
        torch_path.append(time.perf_counter() - t0)
        if base.returncode:
            return {"skipped": base.stderr.strip()[-300:]}
    return {"runs": runs, "embcache_onnx_s": round(statistics.median(ours), 3),
            "baseline_torch_s": round(statistics.median(torch_path), 3),
            "ratio": round(statistics.median(ours) / statistics.median(torch_path), 3),
            "same_top_hit": first == base.stdout.strip(), "goal_s": 3.0}


# -- 2. loading a matrix ----------------------------------------------------------------------------
def synthetic_store(root: Path, n: int, shard_rows: int = 50_000) -> None:
    from embcache.storage import FeatureStore, spec
    store = FeatureStore(root)
    t = store.table("bert_features", spec("bench-serve", 1, {"n": n}), key="text_sha")
    rng = np.random.default_rng(0)
    for lo in range(0, n, shard_rows):
        hi = min(n, lo + shard_rows)
        x = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        t.write(pa.table({"text_sha": [key(i) for i in range(lo, hi)],
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)}))
    keys = [key(i) for i in range(n)]
    store.corpus("bench").commit_snapshot(pa.table({"doc_id": keys, "text_sha": keys}))
    docs = store.table("documents", spec("bench-serve-docs", 1, {"n": n}), key="text_sha")
    docs.write(pa.table({"text_sha": keys, "text": [f"document {i}" for i in range(n)]}))
    store.corpus("bench").link("documents", docs.fingerprint)
    import embcache
    embcache.open(root).reads.matrix("bert_features", t.fingerprint)          # builds the derived files


LOAD = """
import json, sys, time, hashlib, glob
def rss():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("RssAnon:", "RssFile:")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out
import numpy as np
import embcache
store = embcache.open(sys.argv[1])
before = rss()
t0 = time.perf_counter()
if sys.argv[2] == "embcache":
    m = store.reads.matrix("bert_features", store.reads.current_fingerprint("bert_features"))
    total = float(np.asarray(m.vectors).sum(dtype=np.float64))            # touch every row once
else:                                                                     # the mapped baseline
    (path,) = glob.glob(sys.argv[1] + "/tables/bert_features/*/derived/*.f32")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    meta = json.load(open(path[:-4] + ".json"))
    v = np.memmap(path, np.float32, "r", shape=(meta["rows"], meta["dim"]))
    total = float(v.sum(dtype=np.float64))
print(json.dumps({"seconds": round(time.perf_counter() - t0, 3), "before": before, "after": rss()}))
"""


def matrix_load(root: Path, n: int) -> dict:
    out = {}
    for how in ("embcache", "mmap_baseline"):
        done = subprocess.run([sys.executable, "-c", LOAD, str(root), how], capture_output=True, text=True,
                              check=True)
        out[how] = json.loads(done.stdout)
    out["matrix_mb"] = round(n * DIM * 4 / 2**20, 1)
    out["ratio_seconds"] = round(out["embcache"]["seconds"] / max(out["mmap_baseline"]["seconds"], 1e-9), 3)
    anon = out["embcache"]["after"]["RssAnon"] - out["embcache"]["before"]["RssAnon"]
    out["embcache_private_over_matrix"] = round(anon / max(out["matrix_mb"], 1e-9), 3)
    return out


# -- 3. the server under load ---------------------------------------------------------------------
async def load(url: str, mode: str, seconds: float, clients: int, payloads: list, corpus: str) -> dict:
    """`clients` concurrent clients for `seconds`: features by id, or similar by vector (exact or not)."""
    import aiohttp
    latencies, errors = [], 0
    stop_at = time.perf_counter() + seconds

    async def client(session, i):
        nonlocal errors
        j = i
        while time.perf_counter() < stop_at:
            body = payloads[j % len(payloads)]
            j += clients
            t0 = time.perf_counter()
            if mode == "features":
                req = session.get(f"{url}/features/bert_features", params={"ids": body})
            else:
                req = session.post(f"{url}/similar", json={"corpus": corpus, "vector": body, "k": K,
                                                           "exact": mode == "similar_exact"})
            async with req as r:
                await r.read()
                errors += r.status != 200
            latencies.append(time.perf_counter() - t0)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, i) for i in range(clients)))
        wall = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "qps": round(len(latencies) / wall, 1), **pct(latencies)}


def serve_load(root: Path, corpus: str, seconds: float, client_counts: list[int]) -> dict:
    import httpx

    import embcache
    store = embcache.open(root)
    fp = store.reads.fingerprint_for("bert_features", corpus)
    m = store.reads.matrix("bert_features", fp)
    rng = np.random.default_rng(1)
    ids = m.key_of(rng.integers(0, len(m), 2000))
    vecs = (np.asarray(m.vectors[rng.integers(0, len(m), 200)]) + 0.01).tolist()
    api = {"features": pct([_timed(lambda i=i: store.lookup([i], fingerprint=fp)) for i in ids[:300]]),
           "similar_exact": pct([_timed(lambda v=v: store.similar(corpus, vector=v, k=K, exact=True))
                                 for v in vecs[:100]])}
    server, url = start_serve(root)
    try:
        httpx.post(f"{url}/similar", json={"corpus": corpus, "vector": vecs[0], "k": K}, timeout=600)
        modes = ["features", "similar_exact"] + (["similar_indexed"] if _indexed(root) else [])
        result = {"python_api_1_thread": api}
        for clients in client_counts:
            for mode in modes:
                payloads = ids if mode == "features" else vecs
                done = subprocess.run([sys.executable, __file__, "--load", url, mode, str(seconds), str(clients),
                                       corpus], input=json.dumps(payloads), capture_output=True, text=True,
                                      timeout=seconds + 300)
                if done.returncode:
                    raise RuntimeError(done.stderr[-2000:])
                result[f"{mode}_{clients}_clients"] = json.loads(done.stdout)
        result["goals_p99_ms_at_8"] = {"features": 20, "similar": 50}
        return result
    finally:
        server.terminate()
        server.wait(30)


def start_serve(root, *options: str) -> tuple[subprocess.Popen, str]:
    """`embcache --store ROOT serve` on a free loopback port, once /health answers: (process, URL)."""
    import httpx

    from embcache.flows.network import free_port
    port = free_port()
    server = subprocess.Popen([EMBCACHE, "--store", str(root), "serve", "--port", str(port), *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.TransportError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"serve did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _indexed(root: Path) -> bool:
    return bool(list(Path(root).glob("tables/bert_features/*/derived/ann-*.faiss")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, help="a store with a featurized corpus (the demo: ./embcache-store)")
    p.add_argument("--corpus", default="bbc")
    p.add_argument("--text", default="interest rates rise")
    p.add_argument("--cold-runs", type=int, default=5)
    p.add_argument("--size", type=int, default=200_000, help="synthetic rows for the matrix load (and load test "
                                                             "when --store is not given)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of load per mode and client count")
    p.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    p.add_argument("--smoke", action="store_true", help="tiny: 2,000 rows, 2 s of load, 1 cold run")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/embcache-serve-bench"))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    p.add_argument("--load", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        url, mode, seconds, clients, corpus = args.load
        print(json.dumps(asyncio.run(load(url, mode, float(seconds), int(clients), json.loads(sys.stdin.read()),
                                           corpus))))
        return
    if args.smoke:
        args.size, args.seconds, args.cold_runs = 2_000, 2.0, 1
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_before": os.getloadavg()}}
    if args.store is not None:
        print("== cold query similar", flush=True)
        report["cold_query_similar"] = cold_similar(str(args.store), args.corpus, args.text, args.cold_runs)
        print(json.dumps(report["cold_query_similar"], indent=1), flush=True)
    synthetic = args.workdir / f"store-{args.size}"
    shutil.rmtree(synthetic, ignore_errors=True)
    synthetic_store(synthetic, args.size)
    print(f"== loading a {args.size:,} × {DIM} matrix", flush=True)
    report["matrix_load"] = {"n": args.size, **matrix_load(synthetic, args.size)}
    print(json.dumps(report["matrix_load"], indent=1), flush=True)
    served, corpus = (args.store, args.corpus) if args.store is not None else (synthetic, "bench")
    print(f"== serve under load: {served}, {args.clients} clients × {args.seconds:g} s", flush=True)
    report["serve"] = {"store": str(served), **serve_load(served, corpus, args.seconds, args.clients)}
    print(json.dumps(report["serve"], indent=1), flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(args.workdir, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

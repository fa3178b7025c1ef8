"""`embcache serve` under faults (issue 26): derived files truncated, flipped and deleted while
clients query. The server stays up and every answer stays correct; a server started
afterwards finds the damage, rebuilds, and answers the same.

Before: truncating the mapped matrix killed the server with SIGBUS (exit 135) and clients
got "connection refused". The store is built through the storage layer (a bert_features
table of three shards, a documents table, one corpus snapshot): no model is needed to
query by vector, so the test takes seconds.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pyarrow as pa
import pytest

from embcache.storage import FeatureStore, spec

EMBCACHE = os.path.join(os.path.dirname(sys.executable), "embcache")
DIM, ROWS = 32, 600


def sha(i: int) -> str:
    return hashlib.sha256(f"doc {i}".encode()).hexdigest()


@pytest.fixture
def root(tmp_path) -> str:
    store = FeatureStore(tmp_path / "store")
    x = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)
    features = store.table("bert_features", spec("vectors", 1, {"dim": DIM}))
    for lo in range(0, ROWS, 200):
        features.write(pa.table({"text_sha": [sha(i) for i in range(lo, lo + 200)],
                                 "vector": pa.FixedSizeListArray.from_arrays(pa.array(x[lo:lo + 200].ravel()), DIM)}))
    docs = store.table("documents", spec("docs", 1, {}))
    docs.write(pa.table({"text_sha": [sha(i) for i in range(ROWS)], "text": [f"text {i}" for i in range(ROWS)]}))
    corpus = store.corpus("faults")
    corpus.commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(ROWS)], "text_sha": [sha(i) for i in range(ROWS)],
                                     "label": [f"l{i % 3}" for i in range(ROWS)]}))
    corpus.link("documents", docs.fingerprint)
    corpus.link("bert_features", features.fingerprint)
    try:                                            # an HNSW index among the derived files, when faiss is here
        from embcache.storage.ann import AnnConfig, build_index
        import embcache
        build_index(features, embcache.open(store.root).reads.matrix("bert_features", features.fingerprint),
                    AnnConfig(min_rows=0))
    except ImportError:
        pass
    return store.root


def serve(root: str):
    from embcache.flows.network import free_port
    port = free_port()
    proc = subprocess.Popen([EMBCACHE, "--store", root, "serve", "--port", str(port), "--no-warm"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"serve exited {proc.returncode}: {proc.stdout.read()}"
        try:
            if client.get("/health", timeout=1).status_code == 200:
                return proc, client
        except httpx.TransportError:
            assert time.monotonic() < deadline, "serve did not answer within 120 s"
            time.sleep(0.2)


def damage(root: str, rng: random.Random) -> list[str]:
    """Truncate, flip or delete each derived file in turn; what was done, for the failure message."""
    done = []
    for path in sorted(glob.glob(f"{root}/tables/*/*/derived/*")):
        how = rng.choice(["truncate", "flip", "delete"])
        if how == "truncate":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 3)
        elif how == "flip":
            with open(path, "r+b") as f:
                f.seek(os.path.getsize(path) // 2)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0x5A]) if byte else b"\x01")
        else:
            os.unlink(path)
        done.append(f"{how} {os.path.basename(path)}")
    return done


def test_derived_files_damaged_while_clients_query(root):
    x = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)
    proc, client = serve(root)
    queries = [x[i] + 0.01 for i in (3, 250, 599)]
    requests = [("post", "/similar", {"json": {"corpus": "faults", "vector": q.tolist(), "k": 3, "exact": exact}})
                for q in queries for exact in (True, False)]
    requests.append(("get", "/features/bert_features", {"params": {"corpus": "faults", "ids": "d7,d420"}}))
    expected = [client.request(m.upper(), path, **kw).json() for m, path, kw in requests]
    assert [h["doc_id"] for h in expected[0]["hits"]][0] == "d3"
    failures, answers, stop = [], [0], threading.Event()

    def hammer(seed: int) -> None:
        own = httpx.Client(base_url=str(client.base_url), timeout=30)
        rng = random.Random(seed)
        while not stop.is_set():
            i = rng.randrange(len(requests))
            method, path, kw = requests[i]
            try:
                got = own.request(method.upper(), path, **kw)
                if got.status_code != 200 or got.json() != expected[i]:
                    failures.append(f"{path}: {got.status_code} {got.text[:200]}")
            except httpx.TransportError as e:
                failures.append(f"{path}: {type(e).__name__} {e}")
            answers[0] += 1

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    try:
        rng = random.Random(26)
        done = []
        for _ in range(3):                                  # a few rounds: files come back only on a rebuild
            time.sleep(0.3)
            done += damage(root, rng)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert proc.poll() is None, f"serve died ({proc.returncode}) after {done}"
    assert not failures, f"{len(failures)} of {answers[0]} answers wrong after {done}: {failures[:3]}"
    assert answers[0] > 20
    proc.terminate()
    proc.wait(20)

    proc, client = serve(root)                            # a new process: finds the damage, rebuilds
    try:
        for (method, path, kw), want in zip(requests, expected):
            got = client.request(method.upper(), path, **kw)
            assert got.status_code == 200 and got.json() == want, got.text[:300]
    finally:
        proc.terminate()
        proc.wait(20)

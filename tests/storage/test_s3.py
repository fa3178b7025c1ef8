"""The store on s3:// (moto in server mode on loopback): round trips, queries, and the lease lock."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embcache.storage import FeatureStore, LockTimeout, QueryRefused
from embcache.storage import object_lock
from embcache.storage.lock import commit_lock
from embcache.storage.maintenance import gc, verify
from embcache.storage.query import lookup_vectors, sql, topk_cosine
from tests.s3server import moto_s3
from tests.storage.conftest import feature_rows, sha

WRITER = Path(__file__).with_name("writer.py")
ROOT = "s3://bucket/store"


@pytest.fixture(scope="module")
def s3():
    with moto_s3("bucket") as endpoint:
        yield endpoint


@pytest.fixture
def root(s3, request):
    """A fresh store root per test (one bucket, a prefix each)."""
    return f"s3://bucket/{request.node.name.replace('[', '-').replace(']', '')}"


def test_tables_corpora_and_queries_round_trip(root, features_spec):
    store = FeatureStore(root)
    assert store.root == root and not store.fs.local
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(0, 6)))
    t.write(feature_rows(range(4, 10)))                          # 4, 5 already committed: dropped
    store.corpus("news").commit_snapshot(_docs([3, 1, 7]))
    expected = feature_rows(range(10))
    assert t.manifest().rows == 10 and len(t.manifest().shards) == 2
    got = lookup_vectors(store, "bert_features", [sha(7), sha(2)])
    np.testing.assert_array_equal(got, np.stack(expected["vector"].to_numpy(zero_copy_only=False)[[7, 2]]))
    joined = store.corpus_features("news", "bert_features", columns=["vector"])
    assert joined["doc_id"].to_pylist() == ["d3", "d1", "d7"]
    n = sql(store, "SELECT count(*) AS n, count(DISTINCT text_sha) AS k FROM bert_features").to_pylist()
    assert n == [{"n": 10, "k": 10}]
    docs = sql(store, "SELECT c.doc_id FROM corpora.news c JOIN bert_features f USING (text_sha) ORDER BY 1")
    assert docs["doc_id"].to_pylist() == ["d1", "d3", "d7"]
    keys, scores = topk_cosine(store, "bert_features", got[:1], k=3)
    assert keys[0][0] == sha(7) and scores[0][0] == pytest.approx(1.0, abs=1e-6)
    assert verify(store).bad == []
    assert gc(store, grace_seconds=0, dry_run=True).removed == []


def _docs(ids):
    return pa.table({"doc_id": [f"d{i}" for i in ids], "text_sha": [sha(i) for i in ids]})


def test_sql_stays_inside_the_store_root(root, features_spec):
    store = FeatureStore(root)
    store.table("bert_features", features_spec).write(feature_rows(range(3)))
    other = FeatureStore("s3://bucket/elsewhere")
    other.table("bert_features", features_spec).write(feature_rows(range(3)))
    shard = other.open("bert_features").manifest().shards[0].file
    outside = f"s3://bucket/elsewhere/tables/bert_features/{other.open('bert_features').fingerprint}/shards/{shard}"
    for query in (f"SELECT * FROM read_parquet('{outside}')", "SELECT * FROM read_csv('/etc/passwd')"):
        with pytest.raises(QueryRefused):
            sql(store, query)


def test_another_process_commits_are_seen_at_once(root):
    """No listing cache: a table another process creates is there on the next look."""
    store = FeatureStore(root)
    assert store.table_names() == []                      # listed (and, with a cache, remembered) empty
    subprocess.run([sys.executable, str(WRITER), root, "--batches", "0:2"], check=True, timeout=120)
    assert store.table_names() == ["bert_features"]
    assert store.open("bert_features").manifest().rows == 20


def test_concurrent_writer_processes_commit_every_key_exactly_once(root):
    """Three processes, overlapping keys, started together: the S3 lease serializes their commits."""
    start = time.time() + 4
    procs = [subprocess.Popen([sys.executable, str(WRITER), root, "--batches", b, "--start-at", str(start)],
                              stderr=subprocess.PIPE, text=True)
             for b in ("0:6", "3:9", "0:9")]
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read()
    t = FeatureStore(root).open("bert_features")
    keys = t.read(["text_sha"])["text_sha"].to_pylist()
    assert sorted(keys) == sorted(sha(i) for i in range(90))          # none lost, none twice
    store = FeatureStore(root)
    assert verify(store).bad == []
    assert gc(store, grace_seconds=0, dry_run=True).removed == []      # no shard left out of the manifest
    assert not store.fs.exists(f"{t.dir}/.lock")                       # every holder released its lease


def test_lease_waits_for_a_live_holder_and_takes_over_a_dead_one(root):
    store = FeatureStore(root)
    path = store.fs.path("tables", "locked", ".lock")
    with object_lock.s3_lease(store.fs, path, timeout=5, lease=2.0):      # renewed every 0.5 s
        t0 = time.monotonic()
        with pytest.raises(LockTimeout, match="another writer"):
            with object_lock.s3_lease(store.fs, path, timeout=4, lease=2.0):
                pass
        assert time.monotonic() - t0 >= 4                              # waited past the 2 s lease
    store.fs.fs.pipe_file(path, b'{"owner": "a writer that was killed"}')   # never renewed, never released
    t0 = time.monotonic()
    with object_lock.s3_lease(store.fs, path, timeout=15, lease=2.0):
        waited = time.monotonic() - t0
    assert 2.0 <= waited < 10
    assert not store.fs.exists(path)


def test_a_holder_whose_lease_was_taken_learns_it(root):
    store = FeatureStore(root)
    path = store.fs.path("tables", "stolen", ".lock")
    with pytest.raises(object_lock.LockLost, match="lease"):
        with object_lock.s3_lease(store.fs, path, timeout=5, lease=0.4):
            store.fs.fs.pipe_file(path, b'{"owner": "someone else"}')     # as a takeover would
            time.sleep(0.5)                                              # a renewal fails on If-Match


def test_commit_lock_on_s3_holds_a_lock_object_exactly_while_held(root):
    """commit_lock takes the lease on s3://: a lock object exists exactly while it is held."""
    store = FeatureStore(root)
    path = store.fs.path("tables", "t", ".lock")
    seen = []
    with commit_lock(store.fs, path):
        seen.append(store.fs.exists(path))
        blocked = threading.Thread(target=lambda: seen.append(_try_lock(store, path)))
        blocked.start()
        blocked.join()
    assert seen == [True, "timeout"] and not store.fs.exists(path)


def _try_lock(store, path):
    try:
        with commit_lock(store.fs, path, timeout=0.5):
            return "held"
    except LockTimeout:
        return "timeout"


def test_a_failed_shard_upload_commits_nothing(root, features_spec, monkeypatch):
    """The object is never created and the manifest is not touched: nothing half-written is listed."""
    store = FeatureStore(root)
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(3)))
    before = t.manifest()
    real = type(store.fs.fs)._call_s3

    async def flaky(self, method, *args, **kwargs):
        if method == "put_object" and "/shards/" in kwargs.get("Key", ""):
            raise ConnectionResetError("connection reset by peer (mid-upload)")
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(type(store.fs.fs), "_call_s3", flaky)
    with pytest.raises(OSError):
        t.write(feature_rows(range(3, 6)))
    monkeypatch.undo()
    assert t.manifest() == before
    assert len(store.fs.listdir(f"{t.dir}/shards")) == 1
    assert verify(store).bad == []
    assert t.missing([sha(i) for i in range(6)]).to_pylist() == [sha(i) for i in range(3, 6)]

import os
import time

import pyarrow as pa

from embcache.storage import spec
from embcache.storage.fs import TMP_PREFIX
from embcache.storage.maintenance import gc, verify

from .conftest import feature_rows, sha


def age(path, seconds=7200):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_verify_names_every_bad_shard(store, features_spec):
    t = store.table("bert_features", features_spec)
    for lo in (0, 10, 20, 30):
        t.write(feature_rows(range(lo, lo + 10)))
    store.corpus("news").commit_snapshot(pa.table({"doc_id": ["a"], "text_sha": [sha(0)]}))
    assert verify(store).ok and verify(store).checked == 5
    shards = [t.shard_path(s) for s in t.manifest().shards]
    data = open(shards[0], "rb").read()
    open(shards[0], "wb").write(data[:-100])                          # truncated
    flipped = bytearray(open(shards[1], "rb").read())
    flipped[200] ^= 0x01                                              # one bit
    open(shards[1], "wb").write(bytes(flipped))
    os.remove(shards[2])                                              # deleted
    report = verify(store)
    bad = dict(report.bad)
    assert set(bad) == set(shards[:3])
    assert "truncated" in bad[shards[0]]
    assert "sha256" in bad[shards[1]]
    assert "missing" in bad[shards[2]]


def test_gc_removes_orphans_but_not_young_files_or_committed_data(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(10)))
    orphan = t.shard_path("part-deadbeef.parquet")
    open(orphan, "wb").write(b"half a shard")
    tmp = f"{t.dir}/{TMP_PREFIX}123-manifest.json"
    open(tmp, "w").write("{")
    report = gc(store)                       # default grace: both are young, maybe in flight
    assert report.removed == [] and report.kept_young == 2
    age(orphan), age(tmp)
    report = gc(store, dry_run=True)
    assert sorted(report.removed) == sorted([store.fs.relative(orphan), store.fs.relative(tmp)])
    assert os.path.exists(orphan)
    gc(store)
    assert not os.path.exists(orphan) and not os.path.exists(tmp)
    assert store.open("bert_features").read().num_rows == 10 and verify(store).ok


def test_gc_removes_unreferenced_tables_and_keeps_referenced_ones(store, features_spec):
    tokens = store.table("bert_tokens", spec("tokenize", 1, {"max_length": 128}))
    tokens.write(feature_rows(range(5)))
    old_tokens = store.table("bert_tokens", spec("tokenize", 1, {"max_length": 64}))
    old_tokens.write(feature_rows(range(5)))
    tokens.write(feature_rows(range(5, 6)))           # 128 is current again; 64 is unreferenced
    feats_spec = spec("encode", 1, {"pooling": "mean"}, inputs={"bert_tokens": tokens.fingerprint})
    feats = store.table("bert_features", feats_spec)
    feats.write(feature_rows(range(5)))
    linked = store.table("bert_features", spec("encode", 1, {"pooling": "cls"}))
    linked.write(feature_rows(range(5)))             # now current; the mean table is only linked
    store.corpus("news").commit_snapshot(pa.table({"doc_id": ["a"], "text_sha": [sha(0)]}))
    store.corpus("news").link("bert_features", feats.fingerprint)
    stale = store.table("bert_features", spec("encode", 1, {"pooling": "pooler"}))
    stale.write(feature_rows(range(5)))
    linked.write(feature_rows(range(5, 7)))          # current again: `stale` is referenced by nothing
    for root, _, files in os.walk(store.fs.root):
        for f in files:
            age(os.path.join(root, f))
    report = gc(store)
    assert sorted(report.removed) == sorted([store.fs.relative(old_tokens.dir), store.fs.relative(stale.dir)])
    remaining = {(t.name, t.fingerprint) for t in store.tables()}
    assert remaining == {("bert_tokens", tokens.fingerprint), ("bert_features", feats.fingerprint),
                         ("bert_features", linked.fingerprint)}
    assert verify(store).ok


def test_gc_keep_unreferenced(store, features_spec):
    a = store.table("bert_features", features_spec)
    a.write(feature_rows(range(3)))
    store.table("bert_features", spec("encode", 1, {"x": 2})).write(feature_rows(range(3)))
    for root, _, files in os.walk(store.fs.root):
        for f in files:
            age(os.path.join(root, f))
    assert gc(store, unreferenced_tables=False).removed == []
    assert len(store.tables()) == 2

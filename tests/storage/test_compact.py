"""Shard compaction: every key and value bit-identical, rows in order, an atomic swap that a
concurrent reader sees as the old or the new shard set, and old files left to gc."""

import threading
from dataclasses import replace

import pyarrow as pa
import pytest

from embcache.storage import FeatureStore
from embcache.storage.compact import CompactConfig, compact, maybe_compact, plan_groups, prepare, swap
from embcache.storage import manifest as mf
from embcache.storage.maintenance import gc
from embcache.storage.shards import encode_shard

from .conftest import feature_rows

SMALL = CompactConfig(target_bytes=10**9, max_rows=100, min_small=16)


def many_shards(store, features_spec, shards: int, rows: int = 10):
    """A table of `shards` committed shards, as that many Table.write calls would leave it,
    with one manifest write (each write rewrites the whole manifest: O(shards²) for a test)."""
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(rows)))
    m = t.manifest()
    listed = list(m.shards)
    for i in range(1, shards):
        data, sha = encode_shard(feature_rows(range(i * rows, (i + 1) * rows)), m.codecs)
        file = f"part-{i:08d}.parquet"
        store.fs.write_atomic(t.shard_path(file), data)
        listed.append(mf.Shard(file, rows, len(data), sha, mf.utcnow()))
    store.fs.write_atomic(t.manifest_path, replace(m, generation=shards, shards=tuple(listed)).to_json())
    return t


def test_two_thousand_small_shards_become_twenty_with_identical_rows(store, features_spec):
    t = many_shards(store, features_spec, 2000, rows=1)
    before = t.read()
    result = compact(store.open("bert_features"), CompactConfig(target_bytes=10**9, max_rows=100))
    assert (result.before, result.after, result.merged) == (2000, 20, 2000)
    after = store.open("bert_features")
    assert len(after.manifest().shards) == 20
    assert after.read().equals(before)                     # keys, vectors, token ids, order: bit-identical
    assert sorted(after.keys().to_pylist()) == sorted(before["text_sha"].to_pylist())


def test_only_runs_of_small_shards_merge_and_big_ones_stay(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(0, 5)))
    t.write(feature_rows(range(5, 10)))
    t.write(feature_rows(range(10, 200)))                   # not small under max_rows=100
    t.write(feature_rows(range(200, 205)))
    before = t.read()
    big = t.manifest().shards[2].file
    compact(t, SMALL)
    files = [s.file for s in t.manifest().shards]
    assert len(files) == 3 and files[1] == big             # [merged 0-1], big, [lone small shard]
    assert t.read().equals(before)


def test_a_concurrent_reader_sees_the_old_or_the_new_set(store, features_spec):
    many_shards(store, features_spec, 200)
    want = sorted(store.open("bert_features").read()["text_sha"].to_pylist())
    seen, errors, stop = set(), [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                t = store.open("bert_features")
                n = len(t.manifest().shards)
                got = sorted(t.read(["text_sha"])["text_sha"].to_pylist())
                if got != want:
                    errors.append(f"{len(got)} keys from {n} shards")
                seen.add(n)
            except Exception as e:          # noqa: BLE001 - any failure of the reader fails the test
                errors.append(repr(e))
    reader = threading.Thread(target=read)
    reader.start()
    try:
        compact(store.open("bert_features"), CompactConfig(target_bytes=10**9, max_rows=100))
        compact(store.open("bert_features"), CompactConfig(target_bytes=10**9, max_rows=1000))
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    assert seen and seen <= {200, 20, 2}                    # whole shard sets only
    assert len(store.open("bert_features").manifest().shards) == 2


def test_a_commit_during_compaction_is_kept(store, features_spec):
    t = many_shards(store, features_spec, 20)
    rows = t.manifest().rows
    prepared = prepare(t, SMALL)                            # merged files written, nothing listed
    late = feature_rows(range(1000, 1010))
    t.write(late)                                           # a writer commits before the swap
    result = swap(t, prepared)
    assert (result.before, result.after) == (21, 3) and t.manifest().rows == rows + 10
    assert t.manifest().shards[-1].rows == 10               # the late shard, still listed, still last
    assert set(late["text_sha"].to_pylist()) <= set(t.keys().to_pylist())
    assert swap(t, prepared).merged == 0                    # a second swap of the same work does nothing


def test_old_shards_stay_until_gc_then_reads_are_unchanged(store, features_spec):
    t = many_shards(store, features_spec, 20)
    before = t.read()
    old = [t.shard_path(s) for s in t.manifest().shards]
    compact(t, SMALL)
    assert all(store.fs.exists(p) for p in old)            # a reader holding the old manifest still reads
    gc(store, grace_seconds=0)
    assert not any(store.fs.exists(p) for p in old)
    assert store.open("bert_features").read().equals(before)


def test_maybe_compact_waits_for_small_shards_to_pile_up(store, features_spec):
    t = many_shards(store, features_spec, 15)
    assert maybe_compact(t, SMALL) is None
    t.write(feature_rows(range(500, 510)))
    assert maybe_compact(t, SMALL).after == 2


def test_plan_groups_respects_the_targets():
    from embcache.storage.manifest import Shard
    s = [Shard("f", 2, 100, "", "") for _ in range(7)]
    assert plan_groups(tuple(s), CompactConfig(target_bytes=10**6, max_rows=10)) == [[0, 1, 2, 3, 4], [5, 6]]
    s = [Shard("f", 2, 10, "", "") for _ in range(7)]
    assert plan_groups(tuple(s), CompactConfig(target_bytes=50, max_rows=10**6)) == [[0, 1, 2, 3, 4], [5, 6]]
    with pytest.raises(ValueError):
        CompactConfig(min_small=1)

import json

import numpy as np
import pyarrow as pa
import pytest

from embcache.storage import (CorruptShard, FeatureStore, FormatError, InvalidName, NotFound, SchemaMismatch,
                     fingerprint_of, spec)
from embcache.storage.query import as_matrix

from .conftest import feature_rows, sha


def test_write_read_round_trip(store, features_spec):
    t = store.table("bert_features", features_spec)
    rows = feature_rows(range(50))
    shard = t.write(rows)
    assert shard.rows == 50
    back = store.open("bert_features").read()
    assert back.equals(rows)
    assert store.open("bert_features").fingerprint == fingerprint_of(features_spec)


def test_lookup_returns_rows_in_requested_order_across_shards(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(0, 30)))
    t.write(feature_rows(range(30, 60)))
    want = [sha(i) for i in (45, 3, 59, 0)]
    got = t.lookup(want)
    assert got["text_sha"].to_pylist() == want
    expected = feature_rows([45, 3, 59, 0])
    np.testing.assert_array_equal(as_matrix(got["vector"]), as_matrix(expected["vector"]))
    assert got["input_ids"].to_pylist() == expected["input_ids"].to_pylist()


def test_lookup_missing_keys(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(5)))
    with pytest.raises(NotFound, match="1 key"):
        t.lookup([sha(1), "nope"])
    assert t.lookup([sha(1), "nope"], missing="skip")["text_sha"].to_pylist() == [sha(1)]


def test_missing_plans_only_new_keys(store, features_spec):
    t = store.table("bert_features", features_spec)
    keys = [sha(i) for i in range(10)]
    assert t.missing(keys).to_pylist() == keys                 # empty table: everything to do
    t.write(feature_rows(range(0, 10, 2)))
    assert t.missing(keys).to_pylist() == [sha(i) for i in range(1, 10, 2)]


def test_a_key_is_committed_once(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(10)))
    second = t.write(feature_rows(range(5, 15)))     # 5..9 already there: only 10..14 commit
    assert second.rows == 5
    assert t.write(feature_rows(range(3))) is None   # nothing new
    keys = store.open("bert_features").read(["text_sha"])["text_sha"].to_pylist()
    assert sorted(keys) == sorted(sha(i) for i in range(15))
    assert t.manifest().generation == 2


def test_schema_is_fixed_by_first_shard(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(3), dim=16))
    with pytest.raises(SchemaMismatch, match="schema"):
        t.write(feature_rows(range(3, 6), dim=8))
    with pytest.raises(SchemaMismatch, match="no key column"):
        t.write(pa.table({"x": [1]}))
    with pytest.raises(SchemaMismatch, match="nulls"):
        t.write(pa.table({"text_sha": pa.array([None], pa.string())}))


def test_empty_table_can_be_committed(store, features_spec):
    t = store.table("bert_features", features_spec)
    assert t.write(feature_rows([])) is None
    assert store.open("bert_features").manifest().rows == 0
    assert store.status()["tables"][0]["rows"] == 0


def test_different_configs_live_side_by_side(store, features_spec):
    other = spec("encode", 1, {"pooling": "cls", "max_length": 128})
    a = store.table("bert_features", features_spec)
    b = store.table("bert_features", other)
    a.write(feature_rows(range(4), seed=1))
    b.write(feature_rows(range(4), seed=2))
    assert a.fingerprint != b.fingerprint
    # The last written is current; the other stays readable by fingerprint (prefix).
    assert store.open("bert_features").fingerprint == b.fingerprint
    old = store.open("bert_features", a.fingerprint[:10]).read()
    assert old.equals(feature_rows(range(4), seed=1))
    with pytest.raises(NotFound):
        store.open("bert_features", "0123")


def test_a_commit_cut_before_its_pointer_is_finished_by_the_next_handle(store, features_spec):
    """A writer killed between a new fingerprint's manifest and the name's pointer leaves the
    pointer on the fingerprint committed before; the next handle on the new one repairs it.
    A pointer written after the other table's last commit is left alone."""
    import os
    other = spec("encode", 1, {"pooling": "cls", "max_length": 128})
    a = store.table("bert_features", features_spec)
    a.write(feature_rows(range(4), seed=1))
    b = store.table("bert_features", other)
    b.write(feature_rows(range(4), seed=2))
    pointer = store.fs.path("tables", "bert_features", "current.json")
    # The cut state, made exactly: the pointer still names `a`, written before b's manifest.
    store.fs.write_atomic(pointer, json.dumps({"format": 1, "fingerprint": a.fingerprint,
                                               "updated": "2026-01-01T00:00:00Z"}).encode())
    before = os.stat(b.manifest_path).st_mtime_ns - 10**9
    os.utime(pointer, ns=(before, before))
    assert store.open("bert_features").fingerprint == a.fingerprint
    store.table("bert_features", features_spec)                 # a's handle: its commit is older: no change
    assert store.open("bert_features").fingerprint == a.fingerprint
    store.table("bert_features", other)                         # b's handle finishes b's commit
    assert store.open("bert_features").fingerprint == b.fingerprint
    # A later commit to `a` moves the pointer back, and b's handle no longer claims it.
    a.write(feature_rows(range(4, 6), seed=1))
    store.table("bert_features", other)
    assert store.open("bert_features").fingerprint == a.fingerprint


def test_spec_file_records_what_the_fingerprint_hashes(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(2)))
    saved = json.loads(open(f"{t.dir}/spec.json").read())
    assert (saved["format"], saved["format_version"]) == ("embcache.table_spec", 1) and saved["spec"] == features_spec
    assert fingerprint_of(saved["spec"]) == t.fingerprint


def test_codecs_are_chosen_per_column_by_measurement(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(3000), dim=64))
    codecs = t.manifest().codecs

    def gain(col):  # best size relative to plain, uncompressed
        tried = codecs[col]["tried"]
        return min(tried.values()) / tried["plain+none"]
    # Float vectors: dictionary encoding only hurts; compression gains little.
    assert codecs["vector"]["encoding"] != "dictionary"
    assert codecs["vector"]["tried"]["dictionary+none"] > codecs["vector"]["tried"]["plain+none"]
    assert gain("vector") > 0.7
    # Token ids compress by an order of magnitude.
    assert codecs["input_ids"]["codec"] != "none" and gain("input_ids") < 0.1
    # The manifest's byte counts are the real file sizes.
    m = t.manifest()
    import os
    assert m.shards[0].bytes == os.path.getsize(t.shard_path(m.shards[0]))


def test_incompressible_columns_stay_uncompressed(store, features_spec):
    import numpy as np
    bits = np.random.default_rng(0).integers(0, 2**31, 20000, dtype=np.uint32) & 0x3FFFFFFF  # no NaN/inf
    rows = pa.table({"text_sha": [sha(i) for i in range(2000)],
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(bits.view(np.float32)), 10)})
    t = store.table("noise", features_spec)
    t.write(rows)
    assert t.manifest().codecs["vector"]["codec"] == "none"
    assert t.read().equals(rows)


def test_readers_see_only_committed_shards(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(5)))
    # A shard file the manifest does not list (a crashed writer's) is invisible.
    import shutil
    m = t.manifest()
    shutil.copy(t.shard_path(m.shards[0]), t.shard_path("part-orphan.parquet"))
    assert store.open("bert_features").read().num_rows == 5
    assert store.status()["tables"][0]["rows"] == 5


def test_unknown_manifest_format_is_refused_clearly(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(2)))
    doc = json.loads(open(t.manifest_path).read())
    doc["format"] = 99
    open(t.manifest_path, "w").write(json.dumps(doc))
    with pytest.raises(FormatError, match="format 99"):
        store.open("bert_features").read()
    open(t.manifest_path, "w").write("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        store.open("bert_features").read()


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete"])
def test_damaged_shard_reads_raise_clear_errors(store, features_spec, damage):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(20)))
    path = t.shard_path(t.manifest().shards[0])
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        open(path, "wb").write(data[: len(data) // 2])
    elif damage == "bitflip":
        data[len(data) // 3] ^= 0x04
        open(path, "wb").write(bytes(data))
    else:
        import os
        os.remove(path)
    with pytest.raises(CorruptShard) as info:
        store.open("bert_features").read()
    assert path in str(info.value)
    with pytest.raises(CorruptShard):
        t.lookup([sha(1)])


@pytest.mark.parametrize("name", ["../etc", "Bert", "a/b", "", "x" * 80, "1abc", "a.b"])
def test_names_cannot_escape_the_root(store, features_spec, name):
    with pytest.raises(InvalidName):
        store.table(name, features_spec)
    with pytest.raises(InvalidName):
        store.corpus(name)


def test_fingerprint_prefix_must_be_hex_and_unique(store, features_spec):
    store.table("bert_features", features_spec).write(feature_rows(range(2)))
    with pytest.raises(NotFound):
        store.open("bert_features", "../../../../")


def test_store_on_an_fsspec_url(features_spec):
    """A non-local root (fsspec memory://) goes through the same code: the s3:// path."""
    import fsspec
    fsspec.filesystem("memory").store.clear()
    s = FeatureStore("memory://embcache-test")
    t = s.table("bert_features", features_spec)
    t.write(feature_rows(range(10)))
    t.write(feature_rows(range(5, 20)))
    assert s.open("bert_features").read().num_rows == 20
    from embcache.storage.query import sql
    assert sql(s, "SELECT count(DISTINCT text_sha) AS n FROM bert_features")["n"].to_pylist() == [20]
    from embcache.storage.maintenance import verify
    assert verify(s).ok


def test_shard_reads_can_filter_rows(store, features_spec):
    t = store.table("examples", features_spec)
    rows = feature_rows(range(100)).append_column("epoch", pa.array([i // 50 for i in range(100)], pa.int16()))
    t.write(rows)
    got = list(t.iter_shards(["text_sha", "epoch"], filters=[("epoch", "=", 1)]))
    assert len(got) == 1 and got[0]["epoch"].to_pylist() == [1] * 50
    assert got[0]["text_sha"].to_pylist() == [sha(i) for i in range(50, 100)]


def test_files_written_before_format_names_still_read(store, features_spec):
    """Stores written before the {"format": "embcache.<what>", "format_version": N} convention
    have {"format": N} headers: manifests, specs and pointers still read; another number does not."""
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(3)))
    for path in (t.manifest_path, f"{t.dir}/spec.json", store.fs.path("tables", "bert_features", "current.json")):
        doc = json.loads(store.fs.read_bytes(path))
        assert doc.pop("format_version") == 1 and doc["format"].startswith("embcache.")
        doc["format"] = 1
        store.fs.write_atomic(path, json.dumps(doc).encode())
    again = store.open("bert_features")
    assert again.fingerprint == t.fingerprint and again.read().num_rows == 3
    doc = json.loads(store.fs.read_bytes(t.manifest_path))
    doc["format"] = 2
    store.fs.write_atomic(t.manifest_path, json.dumps(doc).encode())
    with pytest.raises(FormatError, match="version"):
        store.open("bert_features").read()

"""The key index (storage/keyindex.py) against plain Python sets and dicts, and through Table."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pyarrow as pa
import pytest

from embcache.storage import FeatureStore, SchemaMismatch, spec
from embcache.storage.compact import CompactConfig, compact
from embcache.storage.keyindex import KeyIndex, key_array, pack_hex64, unpack_hex64
from embcache.storage.table import KEY_INDEXES


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


@pytest.mark.parametrize("kind", ["hex", "words", "ints", "hex_then_words"])
def test_index_answers_as_a_dict_does(kind):
    rng = random.Random(kind)
    make = {"hex": lambda i: sha(i), "words": lambda i: "w" * (i % 7) + str(i), "ints": lambda i: i * 3,
            "hex_then_words": lambda i: sha(i) if i < 300 else f"word{i}"}[kind]
    where, index = {}, KeyIndex()
    for shard in range(40):                                   # 40 shards of 0-30 keys: runs merge
        keys = [make(rng.randrange(600)) for _ in range(rng.randrange(31))]
        keys = [k for k in dict.fromkeys(keys) if k not in where]
        rows = list(range(len(keys)))
        rng.shuffle(rows)
        ordered = [None] * len(keys)
        for k, r in zip(keys, rows):
            ordered[r] = k
            where[k] = (shard, r)
        index = index.with_shard(f"part-{shard}", f"sha-{shard}", key_array(ordered) if keys else key_array(
            pa.array([], pa.int64() if kind == "ints" else pa.string())))
    assert len(index) == len(where)
    assert len(index.runs) <= 8                                 # log-structured: few runs
    asked = [make(i) for i in range(650)] + (["", "zz" * 40, sha(-1).upper()] if kind != "ints" else [-5])
    shard, row = index.find(key_array(asked))
    got = {k: (int(s), int(r)) for k, s, r in zip(asked, shard, row) if s >= 0}
    assert got == {k: v for k, v in where.items()}
    assert sorted(index.keys().tolist()) == sorted(k if isinstance(k, int) else k.encode() for k in where)


def test_key_array_from_arrow_buffers_and_hex_packing():
    keys = pa.array(["b", "", "ccc", "a"]).slice(1)             # an offset into the buffers
    assert key_array(keys).tolist() == [b"", b"ccc", b"a"]
    hexes = key_array([sha(i) for i in range(5)])
    assert hexes.dtype == np.dtype("S64")
    assert (unpack_hex64(pack_hex64(hexes)) == hexes).all()
    assert pack_hex64(key_array(["x" * 64])) is None


def test_table_missing_and_lookup_after_many_commits(tmp_path):
    t = FeatureStore(tmp_path).table("lengths", spec("length", 1, {}), key="text_sha")
    expected = {}
    for start in range(0, 3000, 250):                         # 12 shards
        keys = [sha(i) for i in range(start, start + 250)]
        t.write(pa.table({"text_sha": keys, "n": list(range(start, start + 250))}))
        expected.update({k: i for i, k in enumerate(keys, start)})
    asked = [sha(i) for i in range(2900, 3100)]
    assert t.missing(asked).to_pylist() == [sha(i) for i in range(3000, 3100)]
    order = [sha(i) for i in (2999, 5, 1700, 5, 250)]
    assert t.lookup(order, ["n"])["n"].to_pylist() == [2999, 5, 1700, 5, 250]
    # a new process (an empty cache) builds the same answers from the key columns
    KEY_INDEXES.forget()
    again = FeatureStore(tmp_path).open("lengths")
    assert again.lookup(order, ["n"])["n"].to_pylist() == [2999, 5, 1700, 5, 250]
    assert again.keys().to_pylist() == sorted(expected)
    # a second write of committed keys commits only the new ones
    shard = t.write(pa.table({"text_sha": [sha(1), sha(5000)], "n": [-1, 5000]}))
    assert shard.rows == 1 and t.lookup([sha(1)], ["n"])["n"].to_pylist() == [1]


def test_lookup_reads_rows_across_row_groups(tmp_path, monkeypatch):
    from embcache.storage import shards
    monkeypatch.setattr(shards, "ROW_GROUP_ROWS", 100)         # many row groups in one shard
    t = FeatureStore(tmp_path).table("lengths", spec("length", 1, {}), key="text_sha")
    keys = [sha(i) for i in range(1000)]
    t.write(pa.table({"text_sha": keys, "n": list(range(1000))}))
    picks = [999, 0, 450, 451, 99, 100, 450]
    assert t.lookup([keys[i] for i in picks], ["n"])["n"].to_pylist() == picks


def test_index_follows_compaction(tmp_path):
    t = FeatureStore(tmp_path).table("lengths", spec("length", 1, {}), key="text_sha")
    for start in range(0, 200, 20):
        t.write(pa.table({"text_sha": [sha(i) for i in range(start, start + 20)], "n": list(range(start, start + 20))}))
    assert t.lookup([sha(150)], ["n"])["n"].to_pylist() == [150]
    compact(t, CompactConfig(min_small=2))
    assert len(t.manifest().shards) == 1
    assert t.lookup([sha(150), sha(3)], ["n"])["n"].to_pylist() == [150, 3]
    assert t.missing([sha(3), sha(999)]).to_pylist() == [sha(999)]


def test_keys_with_a_nul_are_refused(tmp_path):
    t = FeatureStore(tmp_path).table("lengths", spec("length", 1, {}), key="word")
    with pytest.raises(SchemaMismatch, match="NUL"):
        t.write(pa.table({"word": ["ok", "bad\x00"], "n": [1, 2]}))


def test_many_rows_per_key_index_their_first_row(tmp_path, monkeypatch):
    """A table such as w2v_examples (a row per center): the index is built from the key column
    read as dictionaries, per row group, and keeps each key's first row."""
    from embcache.storage import shards
    monkeypatch.setattr(shards, "ROW_GROUP_ROWS", 64)
    t = FeatureStore(tmp_path).table("examples", spec("examples", 1, {}), key="text_sha")
    keys = [sha(i // 7) for i in range(700)]                 # 100 keys, 7 rows each, across 11 row groups
    t.write(pa.table({"text_sha": keys, "center": list(range(700))}))
    KEY_INDEXES.forget()
    shard, row = FeatureStore(tmp_path).open("examples").locate([sha(0), sha(99), sha(9), sha(100)])
    assert shard.tolist() == [0, 0, 0, -1] and row.tolist()[:3] == [0, 693, 63]

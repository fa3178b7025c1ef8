"""The warm read path: a table's vectors as one checked matrix loaded into memory (its index: test_ann.py)."""

import glob

import numpy as np
import pytest

from embcache.storage import CorruptShard
from embcache.storage.ann import WARM_INDEXES, search
from embcache.storage.matrix import WarmMatrices, open_matrix
from embcache.storage.query import as_matrix, lookup_vectors, topk_cosine
from embcache.storage.verified import VERIFIED

from .conftest import feature_rows, sha

WARM = WarmMatrices()            # this module's own cache (each embcache.Store owns one)


@pytest.fixture
def table(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(0, 150)))
    t.write(feature_rows(range(150, 300)))
    VERIFIED.forget()
    WARM.forget()
    WARM_INDEXES.forget()
    return t


def brute(ids, queries, k):
    m = as_matrix(feature_rows(ids)["vector"])
    s = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (m / np.linalg.norm(m, axis=1, keepdims=True)).T
    order = np.argsort(-s, axis=1)[:, :k]
    return [[sha(ids[j]) for j in row] for row in order], np.take_along_axis(s, order, 1)


def derived(t, pattern="*"):
    return sorted(glob.glob(f"{t.dir}/derived/{pattern}"))


def test_the_matrix_is_built_once_and_loaded(store, table):
    m = WARM.get(table)
    assert m.vectors.shape == (300, 16) and not m.vectors.flags.writeable and not isinstance(m.vectors, np.memmap)
    assert len(derived(table, "matrix-vector-*.json")) == 1
    assert WARM.get(table) is m                                   # same manifest: no re-read, no re-hash
    np.testing.assert_array_equal(lookup_vectors(store, "bert_features", [sha(299), sha(3)]),
                                  as_matrix(feature_rows([299, 3])["vector"]))


def test_a_commit_extends_the_matrix_and_is_seen_at_once(store, table):
    first = WARM.get(table)
    table.write(feature_rows(range(300, 330)))
    m = WARM.get(table)
    assert m is not first and len(m) == 330 and m.setkey != first.setkey
    assert len(derived(table, "matrix-vector-*.json")) == 1       # the older shard set's files are gone
    np.testing.assert_array_equal(np.asarray(m.vectors), as_matrix(feature_rows(range(330))["vector"]))
    q = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    keys, scores = topk_cosine(store, "bert_features", q, k=5)
    want_keys, want_scores = brute(list(range(330)), q, 5)
    assert keys == want_keys
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def test_a_damaged_matrix_file_is_rebuilt_from_the_shards(table):
    m = WARM.get(table)
    expected = np.array(m.vectors)
    (f32,) = derived(table, "*.f32")
    with open(f32, "r+b") as f:
        f.write(b"\0" * 64)
    VERIFIED.forget()
    WARM.forget()
    np.testing.assert_array_equal(np.asarray(open_matrix(table).vectors), expected)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_a_loaded_matrix_is_immune_to_its_files_changing(table, damage):
    """Issue 26: a mapped file truncated under a reader killed it (SIGBUS); a loaded copy cannot change."""
    m = WARM.get(table)
    expected = np.array(m.vectors)
    for path in derived(table, "matrix-*"):
        if damage == "truncate":
            open(path, "r+b").truncate(16)
        elif damage == "flip":
            with open(path, "r+b") as f:
                f.seek(40)
                f.write(b"\x55")
        else:
            import os
            os.unlink(path)
    np.testing.assert_array_equal(np.asarray(m.vectors), expected)          # touches every page: no SIGBUS
    assert m.find([sha(7)])[1].all()
    np.testing.assert_array_equal(np.asarray(WarmMatrices().get(table).vectors), expected)   # rebuilt
    assert len(derived(table, "matrix-vector-*.json")) == 1


def test_edited_matrix_metadata_is_detected_and_rebuilt(table):
    """Issue 26: "rows": 300 changed to 298 in the matrix's .json gave an IndexError (exit 70)."""
    import json
    expected = np.array(WARM.get(table).vectors)
    (meta,) = derived(table, "matrix-vector-*.json")
    text = open(meta).read()
    assert '"rows": 300' in text
    open(meta, "w").write(text.replace('"rows": 300', '"rows": 298'))
    m = WarmMatrices().get(table)
    assert len(m) == 300 and json.load(open(meta))["rows"] == 300
    np.testing.assert_array_equal(np.asarray(m.vectors), expected)


def test_a_wrong_column_is_the_callers_error_not_damage(table):
    """Issue 26: a column the table does not have was reported as a corrupt shard, with repair advice."""
    from embcache.storage import InvalidName, NotFound
    with pytest.raises(NotFound, match="no vector column 'nosuch'") as e:
        WARM.get(table, "nosuch")
    assert not isinstance(e.value, CorruptShard) and "repair" not in str(e.value)
    with pytest.raises(NotFound, match="vector columns: vector"):
        WARM.get(table, "text_sha")
    with pytest.raises(InvalidName):
        WARM.get(table, "../x")


def test_a_damaged_shard_is_never_served(table):
    shard = sorted(glob.glob(f"{table.dir}/shards/*.parquet"))[0]
    with open(shard, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xfe")
    with pytest.raises(CorruptShard):
        WARM.get(table)


def test_exact_search_of_unit_vectors_agrees_with_numpy(store, features_spec):
    """Unit rows are scanned by faiss's brute-force kNN when it is installed: the same answer as numpy."""
    import pyarrow as pa
    rows = feature_rows(range(200))
    x = as_matrix(rows["vector"])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    unit = rows.set_column(1, "vector", pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 16))
    t = store.table("bert_features", features_spec)
    t.write(unit)
    m = WARM.get(t)
    assert m.unit
    q = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    rows_, scores, how = search(t, m, q, 7, exact=True)
    want_rows, want_scores = m.topk(q, 7)
    assert how == "exact" and (rows_ == want_rows).all()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("share", [0.1, 0.9])
def test_a_restricted_search_returns_only_allowed_rows_best_first(table, share):
    m = WARM.get(table)
    allowed = np.sort(np.random.default_rng(4).choice(len(m), int(len(m) * share), replace=False))
    q = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
    rows, scores = m.topk(q, 6, allowed)
    s = m.scores(m.normalized(q), allowed)
    want = allowed[np.argsort(-s, axis=1)[:, :6]]
    assert (rows == want).all() and set(rows.ravel()) <= set(allowed)
    np.testing.assert_allclose(scores, np.take_along_axis(s, np.argsort(-s, axis=1)[:, :6], 1), rtol=1e-5)

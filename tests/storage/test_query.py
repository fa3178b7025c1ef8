import numpy as np
import pyarrow as pa
import pytest

from embcache.storage import QueryRefused, StoreError
from embcache.storage.query import as_matrix, lookup_vectors, sql, to_dataset, topk_cosine

from .conftest import feature_rows, sha


@pytest.fixture
def filled(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(0, 40)))
    t.write(feature_rows(range(40, 100)))
    store.corpus("news").commit_snapshot(pa.table({
        "doc_id": [f"d{i}" for i in range(100)], "text_sha": [sha(i) for i in range(100)],
        "label": ["a" if i % 3 else "b" for i in range(100)]}))
    return store


def test_sql_sees_every_table_and_corpus(filled):
    assert sql(filled, "SELECT count(*) AS n FROM bert_features")["n"].to_pylist() == [100]
    got = sql(filled, "SELECT label, count(*) AS n FROM corpora.news GROUP BY 1 ORDER BY 1")
    assert got.to_pydict() == {"label": ["a", "b"], "n": [66, 34]}
    joined = sql(filled, "SELECT count(*) AS n FROM corpora.news JOIN bert_features USING (text_sha) "
                         "WHERE label = 'b'")
    assert joined["n"].to_pylist() == [34]
    cat = sql(filled, "SELECT name, rows, shards, current FROM embcache_tables")
    assert cat.to_pylist() == [{"name": "bert_features", "rows": 100, "shards": 2, "current": True}]
    fp12 = cat_fp = sql(filled, "SELECT fingerprint FROM embcache_tables")["fingerprint"][0].as_py()[:12]
    assert cat_fp and sql(filled, f'SELECT count(*) AS n FROM "bert_features@{fp12}"')["n"].to_pylist() == [100]


def test_the_snapshot_catalog_lists_every_snapshot_and_marks_the_current_one(filled):
    filled.corpus("news").commit_snapshot(pa.table({"doc_id": ["d0"], "text_sha": [sha(0)]}))
    got = sql(filled, "SELECT corpus, snapshot, current, rows FROM embcache_snapshots ORDER BY snapshot")
    assert got.to_pylist() == [{"corpus": "news", "snapshot": "000001", "current": False, "rows": 100},
                               {"corpus": "news", "snapshot": "000002", "current": True, "rows": 1}]


@pytest.mark.parametrize("statement", [
    "COPY bert_features TO 'out.parquet'",
    "CREATE TABLE x AS SELECT 1",
    "INSERT INTO embcache_tables VALUES ('x', 'y', true, 1, 1, 1)",
    "DROP VIEW bert_features",
    "ATTACH 'other.db' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SELECT 1; DROP VIEW bert_features",
    "PRAGMA database_list",
])
def test_sql_refuses_anything_but_one_select(filled, statement):
    with pytest.raises(QueryRefused):
        sql(filled, statement)


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_parquet('{root}/../outside.parquet')",
    "SELECT * FROM glob('/*')",
])
def test_sql_cannot_read_outside_the_store(filled, tmp_path, statement):
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"secret": [1]}), tmp_path / "outside.parquet")
    with pytest.raises(QueryRefused, match="sandbox"):
        sql(filled, statement.format(root=filled.root))


def test_sql_errors_are_clear(filled):
    with pytest.raises(StoreError, match="no_such_table"):
        sql(filled, "SELECT * FROM no_such_table")


def test_lookup_vectors_numpy_and_torch(filled):
    keys = [sha(i) for i in (99, 0, 41)]
    expected = as_matrix(feature_rows([99, 0, 41])["vector"])
    got = lookup_vectors(filled, "bert_features", keys)
    assert got.dtype == np.float32 and got.shape == (3, 16)
    np.testing.assert_array_equal(got, expected)
    torch = pytest.importorskip("torch")
    t = lookup_vectors(filled, "bert_features", keys, to="torch")
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(expected.copy()))


def test_topk_cosine_matches_brute_force(filled):
    all_rows = feature_rows(range(100))
    m = as_matrix(all_rows["vector"])
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((4, 16)).astype(np.float32)
    keys, scores = topk_cosine(filled, "bert_features", queries, k=7)
    mn = m / np.linalg.norm(m, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute = qn @ mn.T
    for i in range(4):
        order = np.argsort(-brute[i])[:7]
        assert keys[i] == [sha(j) for j in order]
        np.testing.assert_allclose(scores[i], brute[i, order], rtol=1e-5, atol=1e-6)


def test_topk_restricted_to_a_subset(filled):
    v = as_matrix(feature_rows([5])["vector"])
    keys, scores = topk_cosine(filled, "bert_features", v, k=3)
    assert keys[0][0] == sha(5) and scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    subset = [sha(i) for i in range(50, 60)]
    keys, _ = topk_cosine(filled, "bert_features", v, k=3, restrict_to=subset)
    assert set(keys[0]) <= set(subset) and len(keys[0]) == 3


def test_export_to_datasets(filled):
    ds = to_dataset(filled, "bert_features")
    assert len(ds) == 100 and set(ds.column_names) == {"text_sha", "vector", "input_ids"}
    assert ds[0]["text_sha"] == sha(0)
    np.testing.assert_allclose(ds.with_format("numpy")[:3]["vector"], as_matrix(feature_rows(range(3))["vector"]))

import pyarrow as pa
import pytest

from embcache.storage import NotFound, SchemaMismatch

from .conftest import feature_rows, sha


def docs(ids, labels=None):
    cols = {"doc_id": [f"d{i}" for i in ids], "text_sha": [sha(i) for i in ids]}
    if labels:
        cols["label"] = labels
    return pa.table(cols)


def test_snapshots_are_immutable_and_the_last_is_current(store):
    c = store.corpus("news")
    s1 = c.commit_snapshot(docs([1, 2, 3]), note="first")
    s2 = c.commit_snapshot(docs([2, 3, 4]))
    assert (s1.id, s2.id) == ("000001", "000002")
    assert c.read()["doc_id"].to_pylist() == ["d2", "d3", "d4"]
    assert c.read("000001")["doc_id"].to_pylist() == ["d1", "d2", "d3"]
    assert store.corpora() == ["news"]
    with pytest.raises(NotFound, match="no snapshot '9'"):
        c.read("9")


def test_snapshot_needs_unique_ids_and_content_hashes(store):
    c = store.corpus("news")
    with pytest.raises(SchemaMismatch, match="duplicate doc_id"):
        c.commit_snapshot(pa.table({"doc_id": ["a", "a"], "text_sha": ["x", "y"]}))
    with pytest.raises(SchemaMismatch, match="text_sha"):
        c.commit_snapshot(pa.table({"doc_id": ["a"]}))
    with pytest.raises(NotFound, match="no snapshot yet"):
        c.read()


def test_join_snapshot_with_features_in_snapshot_order(store, features_spec):
    store.table("bert_features", features_spec).write(feature_rows(range(10)))
    # Two documents share a text (d3 and d3b): features are keyed by content, both get them.
    snap = pa.table({"doc_id": ["d7", "d3", "d3b"], "text_sha": [sha(7), sha(3), sha(3)],
                     "label": ["tech", "sport", "sport"]})
    store.corpus("news").commit_snapshot(snap)
    joined = store.corpus_features("news", "bert_features", columns=["vector"])
    assert joined.column_names == ["doc_id", "text_sha", "label", "vector"]
    assert joined["doc_id"].to_pylist() == ["d7", "d3", "d3b"]
    expected = feature_rows([7, 3, 3])["vector"].to_pylist()
    assert joined["vector"].to_pylist() == expected


def test_join_with_documents_not_yet_computed(store, features_spec):
    store.table("bert_features", features_spec).write(feature_rows(range(3)))
    store.corpus("news").commit_snapshot(docs([0, 1, 5]))
    with pytest.raises(NotFound, match="1 key"):
        store.corpus_features("news", "bert_features")
    got = store.corpus_features("news", "bert_features", missing="skip")
    assert got["doc_id"].to_pylist() == ["d0", "d1"]


def test_removed_document_leaves_the_view_but_its_features_stay(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(3)))
    c = store.corpus("news")
    c.commit_snapshot(docs([0, 1, 2]))
    c.commit_snapshot(docs([0, 2]))
    assert store.corpus_features("news", "bert_features")["doc_id"].to_pylist() == ["d0", "d2"]
    assert t.manifest().rows == 3                      # nothing deleted: d1's text may come back
    assert t.missing([sha(1)]).to_pylist() == []


def test_links_record_tables_built_for_a_corpus(store, features_spec):
    t = store.table("bert_features", features_spec)
    t.write(feature_rows(range(2)))
    c = store.corpus("news")
    c.commit_snapshot(docs([0, 1]))
    c.link("bert_features", t.fingerprint)
    c.link("bert_features", t.fingerprint)             # idempotent
    assert c.manifest().links == {"bert_features": [t.fingerprint]}
    assert store.status()["corpora"][0]["tables"] == {"bert_features": [t.fingerprint]}


def test_a_reserved_id_goes_back_to_its_content_only(tmp_path):
    """Issue 18 item 3: ingest commits its rejects under a reserved id before its snapshot."""
    from embcache.storage import FeatureStore
    c = FeatureStore(tmp_path / "s").corpus("news")
    docs = pa.table({"doc_id": ["a"], "text_sha": ["x" * 64]})
    first = c.reserve_id("digest-1")
    assert first == "000001" and c.reserve_id("digest-1") == first     # a cut run, re-run: the same id
    assert c.reserve_id("digest-2") == "000002"                         # other content never gets it
    snap = c.commit_snapshot(docs, stats={"content_sha256": "digest-2"}, same_as_current="content_sha256",
                             snapshot_id="000002")
    assert snap.id == "000002" and c.manifest().held == {"000001": "digest-1"}
    assert c.reserve_id("digest-2") == "000002"                         # already current: its id
    assert c.reserve_id("digest-1") == "000003"                         # older than the current: not given back

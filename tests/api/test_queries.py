"""Issue 27 item 5 (filters, batches, point-in-time reads), item 2 (query encoding without torch)
and issue 31 item 5 (pandas), each against a hand (brute-force) computation on the same rows."""

import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import embcache

from .conftest import text_of


def brute_force(store, corpus, q, k, keep=lambda row: True, snapshot=None):
    """(doc_id, score) of the k best distinct texts among the snapshot rows `keep` accepts: numpy only."""
    f = store.features(corpus, snapshot=snapshot)
    rows = [i for i in range(len(f)) if keep({"doc_id": f.doc_ids[i], "label": f.labels[i], "split": f.splits[i]})]
    first = {}
    for i in rows:
        first.setdefault(f.text_sha[i], i)
    idx = np.array(list(first.values()), dtype=np.int64)
    x = f.vectors[idx] / np.linalg.norm(f.vectors[idx], axis=1, keepdims=True)
    s = x @ (q / np.linalg.norm(q))
    best = np.argsort(-s, kind="stable")[:k]
    return [(f.doc_ids[idx[b]], float(s[b])) for b in best]


def test_label_and_where_filters_equal_brute_force(store):
    q = store.encode("the team won the game")[0]
    for label, where, keep in [
        ("sports", None, lambda r: r["label"] == "sports"),
        (["tech", "business"], None, lambda r: r["label"] in ("tech", "business")),
        (None, "label <> 'sports' AND doc_id LIKE '%1.txt'", lambda r: r["label"] != "sports"
         and r["doc_id"].endswith("1.txt")),
    ]:
        got = store.similar("bbc", vector=q, k=4, label=label, where=where)
        want = brute_force(store, "bbc", q, 4, keep)
        assert [h.doc_id for h in got] == [d for d, _ in want]
        np.testing.assert_allclose([h.score for h in got], [s for _, s in want], rtol=1e-5)
    # a shared text under a filter names the document that passed it
    cat = store.similar("bbc", text="the cat sat on the mat", k=1, label="sports")[0]
    assert cat.doc_id == "sports/006.txt" and cat.label == "sports"
    assert store.similar("bbc", vector=q, k=5, where="label = 'tech'") == store.similar("bbc", vector=q, k=5,
                                                                                        label="tech")
    assert store.similar("bbc", vector=q, k=3, where="label = 'none of them'") == []
    with pytest.raises(embcache.QueryRefused, match="nosuch"):
        store.similar("bbc", vector=q, where="nosuch = 1")
    with pytest.raises(embcache.QueryRefused, match="read_csv"):
        store.similar("bbc", vector=q, where="doc_id IN (SELECT * FROM read_csv('/etc/passwd'))")


def test_batches_answer_each_query_in_order(store):
    texts = ["the team won the game", "bank shares rise", "the film and music"]
    batch = store.similar("bbc", text=texts, k=3)
    assert [[h.doc_id for h in hits] for hits in batch] == \
        [[h.doc_id for h in store.similar("bbc", text=t, k=3)] for t in texts]
    vectors = store.encode(texts)
    by_vector = store.similar("bbc", vector=vectors, k=3, label="tech")
    assert len(by_vector) == 3 and all(h.label == "tech" for hits in by_vector for h in hits)
    assert [h.doc_id for h in by_vector[1]] == [d for d, _ in brute_force(store, "bbc", vectors[1], 3,
                                                                          lambda r: r["label"] == "tech")]


def test_bad_query_vectors_are_the_callers_error(store):
    for bad in ([float("nan")] * 32, [float("inf")] * 32, [1e39] * 32, [], [0.1] * 10, [0.1] * 33, [[0.1]]):
        with pytest.raises(ValueError):
            store.similar("bbc", vector=bad)
    with pytest.raises(ValueError, match="Unicode"):
        store.similar("bbc", text="\ud800")


@pytest.fixture(scope="module")
def two_snapshots(built_store, tmp_path_factory):
    """A copy of the store whose corpus got a second snapshot: tech/ dropped, sports relabelled."""
    root = tmp_path_factory.mktemp("snapshots") / "store"
    shutil.copytree(built_store[0], root)
    store = embcache.open(root)
    old = store.feature_store.corpus("bbc").read()
    keep = [not d.startswith("tech/") for d in old["doc_id"].to_pylist()]
    new = old.filter(pa.array(keep))
    labels = ["games" if v == "sports" else v for v in new["label"].to_pylist()]
    new = new.set_column(new.schema.get_field_index("label"), "label", pa.array(labels))
    store.feature_store.corpus("bbc").commit_snapshot(new)
    return embcache.open(root), old


def test_point_in_time_features_sql_and_search(two_snapshots):
    store, old = two_snapshots
    first, current = store.snapshots("bbc")
    then, now = store.features("bbc", snapshot=first), store.features("bbc")
    assert then.doc_ids.tolist() == old["doc_id"].to_pylist() and then.snapshot == first
    assert now.snapshot == current and not any(d.startswith("tech/") for d in now.doc_ids)
    assert "games" in now.label_names and "sports" in then.label_names
    np.testing.assert_array_equal(then.vectors[[then.doc_ids.tolist().index(d) for d in now.doc_ids]], now.vectors)
    counted = store.sql(f'SELECT count(*) AS n FROM corpora."bbc@{first}"').to_pylist()
    assert counted == [{"n": old.num_rows}]
    assert store.sql("SELECT count(*) AS n FROM corpora.bbc").to_pylist() == [{"n": len(now)}]
    q = then.vectors[then.doc_ids.tolist().index("tech/002.txt")]
    past = store.similar("bbc", vector=q, k=3, snapshot=first)
    assert past[0].doc_id == "tech/002.txt"
    assert [h.doc_id for h in past] == [d for d, _ in brute_force(store, "bbc", q, 3, snapshot=first)]
    assert all(not h.doc_id.startswith("tech/") for h in store.similar("bbc", vector=q, k=5))
    np.testing.assert_array_equal(store.lookup(["tech/002.txt"], corpus="bbc", snapshot=first), q[None])
    with pytest.raises(embcache.UnknownKeys):
        store.lookup(["tech/002.txt"], corpus="bbc")
    with pytest.raises(embcache.NotFound, match="kept: 000001, 000002"):
        store.features("bbc", snapshot="000009")


def test_features_as_pandas(store):
    f = store.features("bbc")
    frame = store.features("bbc", format="pandas")
    assert list(frame.columns) == ["doc_id", "text_sha", "label", "label_id", "split", "vector"]
    assert frame["doc_id"].tolist() == f.doc_ids.tolist() and frame["label_id"].tolist() == f.label_ids.tolist()
    np.testing.assert_array_equal(np.stack(frame["vector"].to_numpy()), f.vectors)
    wide = store.features("bbc", format="pandas", wide=True)
    assert wide.shape == (len(f), 5 + f.vectors.shape[1]) and wide.columns[-1] == f"vector_{f.vectors.shape[1] - 1}"
    np.testing.assert_array_equal(wide[[f"vector_{i}" for i in range(f.vectors.shape[1])]].to_numpy(), f.vectors)


PROBE = """
import sys, json, embcache
store = embcache.open(sys.argv[1])
v = store.encode(json.loads(sys.argv[2]), corpus="bbc")
print(json.dumps({"vectors": v.tolist(), "torch": "torch" in sys.modules,
                  "transformers": "transformers" in sys.modules}))
"""


def test_query_text_is_encoded_without_torch_as_the_table_was(built_store, store):
    import json
    texts = ["the team won the game", "bank shares rise as the market rate falls", text_of("tech/004.txt")]
    done = subprocess.run([sys.executable, "-c", PROBE, built_store[0], json.dumps(texts)], capture_output=True,
                          text=True, timeout=300, check=True)
    got = json.loads(done.stdout)
    assert not got["torch"] and not got["transformers"]
    from embcache.stages.bert import encode_query                  # the torch path, as the table was built
    meta = store.feature_store.open("bert_features").saved_spec()["meta"]
    np.testing.assert_allclose(np.asarray(got["vectors"], np.float32), encode_query(meta, texts), atol=1e-4)
    f = store.features("bbc")
    stored = f.vectors[f.doc_ids.tolist().index("tech/004.txt")]
    np.testing.assert_allclose(np.asarray(got["vectors"][2], np.float32), stored, atol=1e-4)

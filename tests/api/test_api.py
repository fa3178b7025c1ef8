"""The public API (embcache.open / Store / run) over a small real store built by embcache.run."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import embcache
from embcache.pipeline.encode import EncodeConfig, encode_texts
from embcache.pipeline.model import load_model, load_tokenizer
from embcache.pipeline.tokenize import TokenizeConfig

from .conftest import DOCS, doc_ids, text_of


def test_run_returns_its_record_and_the_store_opens(built_store, store):
    root, record = built_store
    assert record["status"] == "completed" and record["store"] == root
    assert {s["stage"] for s in record["stages"]} >= {"ingest", "featurize-bert", "train-word2vec"}
    assert store.corpora() == ["bbc"]
    current = {t.name: t for t in store.tables() if t.current}
    assert current["bert_features"].rows == len(doc_ids()) - 1          # two documents share a text
    assert {"documents", "bert_tokens", "word_vectors"} <= set(current)


def test_open_refuses_a_missing_store(tmp_path):
    with pytest.raises(embcache.NotFound, match="no embcache store"):
        embcache.open(tmp_path / "nothing-here")
    with pytest.raises(embcache.StoreError):
        embcache.open(tmp_path)                                           # exists, but holds no store


def test_features_in_snapshot_order_with_labels_and_splits(store):
    f = store.features("bbc")
    snap = store.feature_store.corpus("bbc").read()
    assert f.doc_ids.tolist() == snap["doc_id"].to_pylist()
    assert sorted(f.doc_ids.tolist()) == sorted(doc_ids())
    assert f.labels.tolist() == [d.split("/")[0] for d in f.doc_ids]
    assert f.label_names == tuple(DOCS) and f.label_ids.tolist() == [f.label_names.index(v) for v in f.labels]
    assert f.vectors.dtype == np.float32 and f.vectors.shape == (len(doc_ids()), 32)
    assert set(f.splits.tolist()) == {"train", "validation", "test"}
    from embcache.stages.classify import labelled
    parts = labelled(store.feature_store, "bbc", seed=0).parts           # what the heads train on
    for name, rows in parts.items():
        assert sorted(np.flatnonzero(f.splits == name).tolist()) == sorted(rows.tolist())
    train = f.split("train")
    assert len(train) == len(parts["train"]) and set(train.splits.tolist()) == {"train"}
    shared = [f.doc_ids.tolist().index(d) for d in ("business/006.txt", "sports/006.txt")]
    np.testing.assert_array_equal(f.vectors[shared[0]], f.vectors[shared[1]])


def test_formats_agree(store):
    f = store.features("bbc")
    t = store.features("bbc", format="torch")
    np.testing.assert_array_equal(t.vectors.numpy(), f.vectors)
    assert t.label_ids.tolist() == f.label_ids.tolist() and t.doc_ids.tolist() == f.doc_ids.tolist()
    table = store.features("bbc", format="arrow")
    assert isinstance(table, pa.Table)
    assert table.column_names == ["doc_id", "text_sha", "label", "label_id", "split", "vector"]
    assert table["doc_id"].to_pylist() == f.doc_ids.tolist() and table["split"].to_pylist() == f.splits.tolist()
    np.testing.assert_array_equal(np.array(table["vector"].to_pylist(), np.float32), f.vectors)
    ds = store.features("bbc", format="dataset")
    assert ds.num_rows == len(f) and ds["label"] == f.labels.tolist()
    np.testing.assert_array_equal(ds.with_format("numpy")[:]["vector"], f.vectors)
    with pytest.raises(ValueError, match="format must be one of"):
        store.features("bbc", format="polars")


def test_lookup_by_doc_id_and_by_text_sha_in_the_order_given(store):
    f = store.features("bbc")
    wanted = ["tech/003.txt", "business/001.txt", "tech/003.txt", "sports/006.txt"]
    rows = [f.doc_ids.tolist().index(d) for d in wanted]
    np.testing.assert_array_equal(store.lookup(wanted, corpus="bbc"), f.vectors[rows])
    shas = f.text_sha[rows].tolist()
    np.testing.assert_array_equal(store.lookup(shas), f.vectors[rows])
    one = store.lookup("business/001.txt", corpus="bbc", format="torch")
    assert tuple(one.shape) == (1, 32)


def test_unknown_ids_are_named(store):
    with pytest.raises(embcache.UnknownKeys) as e:
        store.lookup(["business/001.txt", "nope/1.txt", "nope/2.txt"], corpus="bbc")
    assert e.value.keys == ["nope/1.txt", "nope/2.txt"] and "'nope/1.txt', 'nope/2.txt'" in str(e.value)
    assert isinstance(e.value, KeyError) and isinstance(e.value, embcache.StoreError)
    with pytest.raises(KeyError, match="0" * 64):
        store.lookup(["0" * 64])
    with pytest.raises(embcache.NotFound, match="no corpus 'news'.*corpora: bbc"):
        store.features("news")


def test_similar_by_text_equals_similar_by_its_vector(store):
    by_text = store.similar("bbc", text="bank shares rise as the market rate falls", k=4)
    vector = store.encode("bank shares rise as the market rate falls", corpus="bbc")[0]
    by_vector = store.similar("bbc", vector=vector, k=4)
    assert by_text == by_vector and len(by_text) == 4
    top = by_text[0]
    assert (top.doc_id, top.label, top.text) == ("business/002.txt", "business", text_of("business/002.txt"))
    assert top.score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in by_text] == sorted((h.score for h in by_text), reverse=True)
    assert len({h.text_sha for h in store.similar("bbc", text="the cat", k=20)}) == len(doc_ids()) - 1
    with pytest.raises(ValueError, match="exactly one"):
        store.similar("bbc")
    with pytest.raises(ValueError, match="has 32"):
        store.similar("bbc", vector=np.zeros(5))


def test_encode_matches_the_stored_vectors(store, fast_tiny_bert):
    f = store.features("bbc")
    texts = [text_of(d) for d in f.doc_ids]
    np.testing.assert_allclose(store.encode(texts, corpus="bbc"), f.vectors, atol=1e-5)
    direct = encode_texts(texts[:2], load_tokenizer(fast_tiny_bert), load_model(fast_tiny_bert),
                          TokenizeConfig(max_length=32), EncodeConfig())
    np.testing.assert_allclose(store.encode(texts[:2]), direct, atol=1e-5)   # no corpus: the current table


def test_sql(store):
    t = store.sql("SELECT label, count(*) AS n FROM corpora.bbc GROUP BY 1 ORDER BY 1")
    assert t.to_pylist() == [{"label": label, "n": len(texts)} for label, texts in DOCS.items()]
    with pytest.raises(embcache.QueryRefused):
        store.sql("COPY (SELECT 1) TO 'x.csv'")


def test_neighbours(store):
    from embcache.stages.word2vec_eval import keyed_vectors
    hits = store.neighbours("market", k=5)
    assert len(hits) == 5 and "market" not in [w for w, _ in hits]
    assert all(isinstance(w, str) and -1 <= s <= 1 for w, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    kv = keyed_vectors(store.feature_store)
    assert hits == [(w, pytest.approx(s)) for w, s in kv.most_similar("market", topn=5)]
    assert store.neighbours("Market", k=5, corpus="bbc") == hits
    with pytest.raises(embcache.UnknownKeys, match="qwertyuiop"):
        store.neighbours("qwertyuiop")


def test_import_embcache_is_light():
    code = ("import sys, embcache\n"
            "heavy = [m for m in ('torch', 'prefect', 'transformers', 'gensim', 'datasets', 'pyarrow')"
            " if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert callable(embcache.open) and 'torch' not in sys.modules and 'prefect' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_exported_name_resolves():
    for name in embcache.__all__:
        assert getattr(embcache, name).__module__.startswith("embcache.")
    assert embcache.StoreError is embcache.storage.StoreError


def test_run_refuses_a_bad_config_before_prefect_starts(tmp_path):
    with pytest.raises(embcache.ConfigError, match="unknown key"):
        embcache.run({"stages": {}}, store=tmp_path)
    with pytest.raises(TypeError, match="config must be"):
        embcache.run(42, store=tmp_path)
    assert not any(tmp_path.iterdir())


def test_k_must_be_positive(store):
    with pytest.raises(ValueError, match="k must be"):
        store.similar("bbc", text="the cat", k=0)
    with pytest.raises(ValueError, match="k must be"):
        store.neighbours("market", k=0)

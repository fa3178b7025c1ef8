"""word2vec flows on the real Prefect engine and store, with gensim's Lee corpus."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.stages.planning import snapshot_keys
from embcache.storage import FeatureStore
from embcache.storage.query import as_matrix

from embcache.pipeline.words import WordConfig, tokenize_words

pytestmark = pytest.mark.usefixtures("prefect_engine")
runner = CliRunner()


@pytest.fixture(scope="module")
def lee_lines():
    from gensim.test.utils import datapath
    return Path(datapath("lee_background.cor")).read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cli(store, *args):
    r = runner.invoke(app, ["--store", str(store), *args])
    assert r.exit_code == 0, r.output
    return r


def test_featurize_train_evaluate_query_export(tmp_path, lee_lines):
    from gensim.models import KeyedVectors
    store = tmp_path / "store"
    # two documents with no example (fewer than two in-vocabulary words) must count as done too
    src = write_lines(tmp_path / "lee.txt", [*lee_lines, "Qwertyuiop zxcvbnm", "government"])
    cli(store, "ingest", "lee", str(src))
    first = cli(store, "featurize", "word2vec", "lee")                 # draws "epoch": documents' ids
    assert "cached" in first.stdout
    again = cli(store, "featurize", "word2vec", "lee")
    assert "examples for 0 documents" in again.stdout                  # everything came from the cache
    s = FeatureStore(store)
    examples = s.open("w2v_examples").read()
    from embcache.stages import word2vec as w2v
    keys = snapshot_keys(s, "lee").to_pylist()
    assert examples.column_names == ["text_sha", "ids"] and examples.num_rows == len(keys)   # one per document
    docs = w2v.as_documents(examples)                                  # what the kernel reads
    lengths = np.diff(docs["offsets"])
    assert sorted(lengths)[:2] == [0, 1] and (docs["ids"] > 0).all()   # "Qwertyuiop zxcvbnm": empty; "government"
    vocab_fp = s.resolve_linked("lee", "w2v_vocab")
    vocab_t = s.open("w2v_vocab", vocab_fp)
    vocab = w2v.vocab_from_table(vocab_t.read(), vocab_t.saved_spec()["meta"])
    by_key = dict(zip(examples["text_sha"].to_pylist(), np.split(docs["ids"], docs["offsets"][1:-1])))
    ids, offsets = vocab.encode(tokenize_words(w2v.texts_of(s, "lee", keys), WordConfig()))
    for k, a, b in zip(keys, offsets[:-1], offsets[1:]):
        np.testing.assert_array_equal(by_key[k], ids[a:b])
    r = cli(store, "train", "word2vec", "lee", "--dim", "32", "--epochs", "3")
    assert "loss curve:" in r.stdout
    png = Path(r.stdout.split("loss curve:")[1].split()[0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss = s.open("word_vectors").saved_spec()["meta"]["result"]["loss_curve"]
    assert np.mean(loss[-3:]) < np.mean(loss[:3])                       # training lowered the loss
    pairs = write_lines(tmp_path / "pairs.tsv", ["word1\tword2\tscore", "government\tminister\t8.0",
                                                 "government\tfire\t2.0", "police\tfire\t5.0"])
    ev = json.loads(cli(store, "evaluate", "word2vec", "--pairs", str(pairs), "--json").stdout)
    assert ev["pairs"]["pairs.tsv"]["oov_ratio"] == 0.0 and -1 <= ev["pairs"]["pairs.tsv"]["spearman"] <= 1
    assert ev["analogies"]["questions"] > 0
    default = json.loads(cli(store, "evaluate", "word2vec", "--json").stdout)   # every similarity file gensim ships
    assert set(default["pairs"]) == {"wordsim353.tsv", "simlex999.txt"}
    hits = json.loads(cli(store, "query", "neighbors", "police", "--k", "5", "--json").stdout)
    assert len(hits) == 5 and "police" not in [h["word"] for h in hits]
    vectors = s.open("word_vectors").read()
    police = as_matrix(vectors.filter(np.array(vectors["word"].to_pylist()) == "police")["vector"])[0]
    for fmt in ("word2vec", "word2vec-binary", "glove"):
        out = tmp_path / f"v.{fmt}"
        cli(store, "export", "vectors", str(out), "--format", fmt)
        kv = KeyedVectors.load_word2vec_format(str(out), binary=fmt == "word2vec-binary", no_header=fmt == "glove")
        assert len(kv) == vectors.num_rows
        np.testing.assert_allclose(kv["police"], police, atol=1e-5)


def test_stored_draws_same_seed_same_examples_other_seed_different(tmp_path, lee_lines):
    src = write_lines(tmp_path / "lee.txt", lee_lines[:60])
    tables = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        store = tmp_path / name
        cli(store, "ingest", "lee", str(src))
        cli(store, "featurize", "word2vec", "lee", "--draws", "stored", "--seed", str(seed), "--min-count", "2")
        tables[name] = FeatureStore(store).open("w2v_examples").read().sort_by([("text_sha", "ascending")])
    assert tables["a"].equals(tables["b"])
    assert not tables["a"]["contexts_negatives"].equals(tables["c"]["contexts_negatives"])


def test_vocabulary_growth_trains_only_new_rows(tmp_path, lee_lines):
    store = tmp_path / "store"
    src = tmp_path / "lee.txt"
    write_lines(src, lee_lines[:150])
    cli(store, "ingest", "lee", str(src))
    cli(store, "featurize", "word2vec", "lee")
    cli(store, "train", "word2vec", "lee", "--dim", "16", "--epochs", "2")
    s = FeatureStore(store)
    before = s.open("word_vectors").read().sort_by("id")
    old_vocab = s.open("w2v_vocab").read()
    write_lines(src, lee_lines)                                           # the other half arrives
    cli(store, "ingest", "lee", str(src))
    grown = cli(store, "featurize", "word2vec", "lee", "--vocabulary", "extend")
    assert "vocabulary v2" in grown.stdout
    new_vocab = s.open("w2v_vocab").read()
    old_words = old_vocab.filter(old_vocab["in_vocab"])["word"].to_pylist()
    new_words = new_vocab.filter(new_vocab["in_vocab"])["word"].to_pylist()
    assert new_words[:len(old_words)] == old_words                     # existing ids never move
    assert len(new_words) > len(old_words)
    r = cli(store, "train", "word2vec", "lee", "--dim", "16", "--epochs", "2", "--freeze-existing")
    after = s.open("word_vectors").read().sort_by("id")
    n_old = before.num_rows
    assert after["word"].to_pylist()[:n_old] == before["word"].to_pylist()
    for col in ("vector", "context_vector"):                             # old rows: bit-identical
        np.testing.assert_array_equal(as_matrix(after[col])[:n_old], as_matrix(before[col]))
    assert f"({after.num_rows - n_old:,} trained)" in r.stdout.replace("\n", " ")
    init = np.abs(as_matrix(after["context_vector"])[n_old:]).sum()
    assert init > 0                                                       # new rows trained (context starts at 0)


def test_subsample_formula_is_its_own_table(tmp_path, lee_lines):
    store = tmp_path / "store"
    cli(store, "ingest", "lee", str(write_lines(tmp_path / "lee.txt", lee_lines[:80])))
    stored = ("--min-count", "2", "--subsample", "1e-3", "--draws", "stored")
    cli(store, "featurize", "word2vec", "lee", *stored)                                    # d2l formula
    cli(store, "featurize", "word2vec", "lee", *stored, "--subsample-formula", "gensim")
    tables = {t.fingerprint: t.rows for t in FeatureStore(store).tables() if t.name == "w2v_examples"}
    d2l_rows, gensim_rows = FeatureStore(store).status()["corpora"][0]["tables"]["w2v_examples"]
    assert len(tables) == 2 and tables[gensim_rows] > tables[d2l_rows]     # gensim's formula keeps more words


def test_stored_examples_rebuild_exactly_the_model_inputs(tmp_path, lee_lines):
    """Mask and label are stored as per-row counts; as_batch must give back make_examples' arrays."""
    from embcache.stages import word2vec as w2v
    from embcache.pipeline.skipgram import SkipGramConfig, make_examples
    store = tmp_path / "store"
    cli(store, "ingest", "lee", str(write_lines(tmp_path / "lee.txt", lee_lines[:40])))
    cli(store, "featurize", "word2vec", "lee", "--min-count", "2", "--draws", "stored")
    s = FeatureStore(store)
    stored = s.open("w2v_examples")
    vocab_fp = stored.saved_spec()["spec"]["inputs"]["w2v_vocab"]
    plan = w2v.plan_examples(str(store), "lee", vocab_fp,
                             w2v.ExamplesConfig(WordConfig(min_count=2), SkipGramConfig(draws="stored")))
    assert FeatureStore(str(store)).table("w2v_examples", plan.examples_spec).fingerprint == stored.fingerprint
    from embcache.stages import planning                       # one shard: the flow's keys, in storage order
    keys = planning.in_storage_order(w2v.documents_of(s, "lee"), planning.snapshot_keys(s, "lee")).to_pylist()
    vocab_t = s.open("w2v_vocab", vocab_fp)
    vocab = w2v.vocab_from_table(vocab_t.read(), vocab_t.saved_spec()["meta"])
    ids, offsets = vocab.encode(tokenize_words(w2v.texts_of(s, "lee", keys), WordConfig(min_count=2)))
    expected = make_examples(ids, offsets, vocab.counts, plan.config.skipgram, w2v.shard_rng(plan, keys))
    got = w2v.as_batch(stored.read())
    for name in ("center", "contexts_negatives", "mask", "label"):
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("draws", ["epoch", "stored"])
def test_decoded_examples_kept_between_epochs_train_the_same_vectors(tmp_path, lee_lines, monkeypatch, draws):
    """Decoding once and reusing the examples = decoding every epoch (threads=1: deterministic);
    the same seed trains the same vectors, another seed others."""
    from embcache.pipeline.configs import SGNSConfig
    from embcache.stages import word2vec as w2v
    src = write_lines(tmp_path / "lee.txt", lee_lines[:60])
    vectors = []
    for budget, name, seed in ((w2v.DECODED_BUDGET, "kept", 0), (0, "streamed", 0), (w2v.DECODED_BUDGET, "other", 1)):
        store = tmp_path / name
        cli(store, "ingest", "lee", str(src))
        cli(store, "featurize", "word2vec", "lee", "--min-count", "2", "--draws", draws)   # 1 stored draw
        s = FeatureStore(store)
        monkeypatch.setattr(w2v, "DECODED_BUDGET", budget)
        w2v.train_vectors(str(store), "lee", s.resolve_linked("lee", "w2v_examples"),
                          s.resolve_linked("lee", "w2v_vocab"), SGNSConfig(dim=8, epochs=3, threads=1), seed=seed)
        vectors.append(as_matrix(s.open("word_vectors").read().sort_by("id")["vector"]))
    np.testing.assert_array_equal(vectors[0], vectors[1])
    assert not np.array_equal(vectors[0], vectors[2])


def test_documents_take_fewer_bytes_than_stored_rows(tmp_path, lee_lines):
    """The same corpus: the documents table (draws "epoch") is smaller than one stored draw;
    stored rows train per pair too; --epochs-of-examples without --draws stored is refused in one
    line with the usage exit code."""
    store = tmp_path / "store"
    cli(store, "ingest", "lee", str(write_lines(tmp_path / "lee.txt", lee_lines[:80])))
    sizes = {}
    for draws in ("epoch", "stored"):
        cli(store, "featurize", "word2vec", "lee", "--draws", draws)
        table = FeatureStore(store).open("w2v_examples", FeatureStore(store).resolve_linked("lee", "w2v_examples"))
        sizes[draws] = sum(sh.bytes for sh in table.manifest().shards)
    assert sizes["epoch"] * 5 < sizes["stored"]
    cli(store, "train", "word2vec", "lee", "--update", "pair", "--dim", "8", "--epochs", "1")
    r = runner.invoke(app, ["--store", str(store), "featurize", "word2vec", "lee", "--epochs-of-examples", "2"])
    assert r.exit_code == 2 and "--draws stored" in r.output and "Traceback" not in r.output

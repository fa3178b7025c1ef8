"""Training stages on the cache (real Prefect engine, tiny real BERT, real store)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.pipeline.head_format import HeadMismatch
from embcache.storage import FeatureStore

pytestmark = pytest.mark.usefixtures("prefect_engine")
runner = CliRunner()

TOPICS = {
    "sport": ["the team won the game", "the team play the game this year", "a win for the team",
              "the game was won in the new year", "team sat after the win"],
    "business": ["quarterly earnings beat analyst expectations", "bank shares rate growth",
                 "the company said earnings would beat", "market shares and bank rate",
                 "company growth beat the market"],
    "politics": ["the government said tax would rate", "minister election tax", "the election of the minister",
                 "government tax growth said the minister", "people and government in the election"],
}


def labelled_folder(root, n_copies=4):
    """folder-per-label corpus: each sentence a few times with a distinct suffix word order."""
    for label, texts in TOPICS.items():
        d = root / label
        d.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            for k in range(n_copies):
                words = text.split()
                (d / f"{i}_{k}.txt").write_text(" ".join(words[k % len(words):] + words[:k % len(words)]))
    return root


def cli(store, *args, code=0):
    r = runner.invoke(app, ["--store", str(store), *args])
    assert r.exit_code == code, r.output
    return r


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("train")
    store = tmp / "store"
    src = labelled_folder(tmp / "topics")
    cli(store, "ingest", "topics", str(src), "--format", "folder")
    cli(store, "featurize", "bert", "topics", "--model", tiny_bert, "--max-length", "16")
    r = json.loads(cli(store, "train", "head", "topics", "--name", "topics", "--lr", "0.01", "--json").stdout)
    return store, tmp, r


def test_head_trains_saves_and_predicts_the_corpus(trained):
    store, _, r = trained
    assert r["documents"] == 60 and set(r["metrics"]) == {"validation", "test"}
    test = r["metrics"]["test"]
    assert test["labels"] == ["business", "politics", "sport"]
    assert np.array(test["confusion_matrix"]).sum() == 6                  # 10 % of 60, stratified
    assert test["accuracy"] >= 0.5                                          # tiny random BERT, 3 topics
    s = FeatureStore(store)
    files, info = s.models.get("head", "topics")
    assert info.meta["feature_fingerprint"] == s.resolve_linked("topics", "bert_features")
    preds = s.open("predictions", s.resolve_linked("topics", "predictions")).read()
    texts = set(s.corpus("topics").read(columns=["text_sha"])["text_sha"].to_pylist())
    assert set(preds["text_sha"].to_pylist()) == texts and set(preds["label"].to_pylist()) <= {"business", "politics", "sport"}
    proba = np.stack(preds["probabilities"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    ev = json.loads(cli(store, "evaluate", "head", "topics", "--json").stdout)
    assert ev["rows"] == "test split" and ev["metrics"]["accuracy"] == test["accuracy"]


def test_head_optimizer_and_dropout_options(trained):
    store, _, _ = trained
    r = cli(store, "train", "head", "topics", "--name", "lbfgs_dropout", "--dropout", "0.2", code=2)
    assert "needs optimizer='adam'" in r.output
    r = json.loads(cli(store, "train", "head", "topics", "--name", "adam", "--optimizer", "adam", "--dropout", "0.2",
                       "--lr", "0.01", "--weight-decay", "0.5", "--json").stdout)
    assert r["metrics"]["test"]["accuracy"] >= 0.5
    config = json.loads(FeatureStore(store).models.get("head", "adam")[0]["head.json"])["config"]
    assert (config["optimizer"], config["dropout"], config["weight_decay"]) == ("adam", 0.2, 0.5)


def test_predict_encodes_only_new_documents(trained, tmp_path):
    store, tmp, _ = trained
    new = tmp_path / "inbox"
    new.mkdir()
    (new / "a.txt").write_text("the team won the game")                  # a text the store already has
    (new / "b.txt").write_text("bank earnings growth beat the market rate")  # new
    cli(store, "ingest", "inbox", str(new), "--format", "files")
    r = json.loads(cli(store, "predict", "inbox", "--head", "topics", "--json").stdout)
    assert r["documents"] == 2 and r["encoded"] == 1 and r["cached"] == 1
    assert sum(r["label_counts"].values()) == 2


def test_head_refuses_features_of_another_model(trained, tiny_bert):
    store, _, _ = trained
    s = FeatureStore(store)
    cli(store, "featurize", "bert", "topics", "--model", tiny_bert, "--max-length", "16", "--pooling", "cls")
    r = cli(store, "evaluate", "head", "topics", code=2)                    # corpus now linked to cls features
    assert "trained on features" in r.output
    from embcache.stages.heads import load
    with pytest.raises(HeadMismatch):
        load(s, "topics", s.resolve_linked("topics", "bert_features"))
    cli(store, "featurize", "bert", "topics", "--model", tiny_bert, "--max-length", "16")   # back to mean


def test_static_classifier_with_partial_rows(trained, tmp_path):
    from gensim.models import KeyedVectors
    store, _, _ = trained
    words = sorted({w for texts in TOPICS.values() for t in texts for w in t.split()} - {"earnings", "minister"})
    rng = np.random.default_rng(0)
    kv = KeyedVectors(32)
    kv.add_vectors(words, rng.normal(size=(len(words), 32)).astype(np.float32))
    path = tmp_path / "vec.txt"
    kv.save_word2vec_format(str(path))
    r = json.loads(cli(store, "train", "static", "topics", "--vectors", str(path), "--trainable", "oov",
                       "--special-token", "<num>", "--epochs", "40", "--lr", "0.03", "--name", "toy", "--json").stdout)
    assert r["pretrained_rows"] == len(words) - sum(w not in str(TOPICS) for w in words)
    assert r["trainable_rows"] == r["rows"] - r["pretrained_rows"] - 1      # every row but <pad> and pretrained
    assert r["metrics"]["test"]["accuracy"] >= 0.5
    s = FeatureStore(store)
    texts = set(s.corpus("topics").read(columns=["text_sha"])["text_sha"].to_pylist())
    assert s.open("word_tokens").manifest().rows == len(texts)           # every text tokenized once
    again = json.loads(cli(store, "train", "static", "topics", "--vectors", str(path), "--trainable", "none",
                           "--epochs", "5", "--name", "frozen", "--json").stdout)
    assert again["trainable_rows"] == 0
    assert s.models.names("static") == ["frozen", "toy"]


def test_finetune_resumes_from_its_checkpoint_and_compare_writes_the_table(trained, tiny_bert, tmp_path):
    store, _, _ = trained
    s = FeatureStore(store)
    default = s.resolve_linked("topics", "bert_features")
    args = ["finetune", "topics", "--model", tiny_bert, "--max-length", "16", "--freeze-epochs", "2",
            "--unfreeze-epochs", "2", "--unfreeze-layers", "1", "--lr", "1e-3", "--json"]
    first = json.loads(cli(store, *args).stdout)
    assert not first["resumed"] and first["phase1"]["steps"] > 0 and first["phase2"]["steps"] > 0
    assert s.resolve_linked("topics", "bert_features") == default          # the head's features stay the default
    assert s.models.get("checkpoint", "finetuned")[1].meta["epoch"] == 2   # last checkpoint: after epoch 2
    again = json.loads(cli(store, *args).stdout)                            # same run: resumes at its end
    assert again["resumed"] and again["phase1"] is None
    assert again["metrics"]["test"]["accuracy"] == first["metrics"]["test"]["accuracy"]
    other = json.loads(cli(store, *args[:-1], "--seed", "1", "--json").stdout)  # another run: no resume
    assert not other["resumed"]
    from gensim.models import KeyedVectors
    words = sorted({w for texts in TOPICS.values() for t in texts for w in t.split()})
    kv = KeyedVectors(16)
    kv.add_vectors(words, np.random.default_rng(0).normal(size=(len(words), 16)).astype(np.float32))
    kv.save_word2vec_format(str(tmp_path / "v.txt"))
    r = json.loads(cli(store, "compare", "topics", "--vectors", str(tmp_path / "v.txt"), "--trainable", "oov",
                       "--trainable", "none", "--model", tiny_bert, "--max-length", "16", "--finetune", "--json").stdout)
    approaches = [row["approach"] for row in r["rows"]]
    assert len(approaches) == 5 and approaches[0].startswith("linear head")
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in r["rows"])
    md = (store / "reports" / "compare-topics.md").read_text()
    assert md.count("\n|") == 2 + 5

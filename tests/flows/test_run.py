"""The end-to-end run (real Prefect engine, tiny real BERT, real store): config files,
one flow with the stage flows as subflows, and incremental re-runs that compute only
what changed."""

import json

import numpy as np
import pytest

from tests.run_configs import write_run_config
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.flows.run import load_config
from embcache.flows.errors import ConfigError
from embcache.storage import FeatureStore

from .test_train import TOPICS, labelled_folder

pytestmark = pytest.mark.usefixtures("prefect_engine")
runner = CliRunner()


def vectors_file(path):
    from gensim.models import KeyedVectors
    words = sorted({w for texts in TOPICS.values() for t in texts for w in t.split()} - {"earnings", "minister"})
    kv = KeyedVectors(16)
    kv.add_vectors(words, np.random.default_rng(0).normal(size=(len(words), 16)).astype(np.float32))
    kv.save_word2vec_format(str(path))
    return path


def write_config(path, store, folder, model, vectors, head_weight_decay=1.0):
    return write_run_config(path, store=store, model=model, corpus="topics",
                            sources=[{"path": str(folder), "format": "folder"}],
                            word2vec={"min_count": 1, "dim": 16, "epochs": 2, "batch_size": 64},
                            head={"weight_decay": head_weight_decay},
                            static={"vectors": vectors, "epochs": 5, "trainable": "oov"})


def run(config, *extra):
    r = runner.invoke(app, ["run", str(config), "--json", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


def by_stage(record):
    return {s["stage"]: s for s in record["stages"]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_bert):
    tmp = tmp_path_factory.mktemp("run")
    folder = labelled_folder(tmp / "topics")
    config = write_config(tmp / "pipeline.toml", tmp / "store", folder, tiny_bert, vectors_file(tmp / "vec.txt"))
    return tmp, folder, config, run(config)


def test_first_run_computes_every_stage_and_records_it(first_run):
    tmp, _, _, record = first_run
    stages = by_stage(record)
    assert record["status"] == "completed"
    assert list(stages) == ["ingest", "featurize-bert", "featurize-word2vec", "train-word2vec",
                            "evaluate-word2vec", "train-head", "train-static"]
    store = FeatureStore(tmp / "store")
    texts = len(set(store.corpus("topics").read(columns=["text_sha"])["text_sha"].to_pylist()))   # 59: one repeat
    assert (stages["ingest"]["computed"], stages["ingest"]["cached"]) == (texts, 60 - texts)
    assert (stages["featurize-bert"]["computed"], stages["featurize-bert"]["cached"]) == (texts, 0)
    assert stages["featurize-word2vec"]["computed"] == texts
    assert all(stages[s]["computed"] == 1 for s in ("train-word2vec", "evaluate-word2vec", "train-head",
                                                    "train-static"))
    summary = record["summary"]["topics"]
    assert summary["documents"] == 60 and summary["rejected"] == 0
    assert 0.0 <= summary["head_accuracy"] <= 1.0 and 0.0 <= summary["static_accuracy"] <= 1.0
    saved = json.loads(store.fs.read_bytes(store.fs.path("runs", f"{record['run_id']}.json")))
    assert saved["stages"] == record["stages"] and saved["flow_run_id"]
    assert store.open("bert_features", store.resolve_linked("topics", "bert_features")).read().num_rows == texts


def test_second_run_computes_nothing_then_new_files_only_their_rows(first_run):
    tmp, folder, config, first = first_run
    store = FeatureStore(tmp / "store")
    snapshot = store.corpus("topics").snapshot().id
    again = run(config)
    assert all(s["computed"] == 0 and s["skipped"] for s in again["stages"]), again["stages"]
    assert store.corpus("topics").snapshot().id == snapshot          # unchanged sources: no new snapshot
    assert again["summary"] == first["summary"]

    (folder / "sport" / "new.txt").write_text("the new team won the final game")
    third = by_stage(run(config))
    assert (third["ingest"]["computed"], third["ingest"]["cached"]) == (1, 60)
    texts = first["stages"][1]["computed"]
    assert (third["featurize-bert"]["computed"], third["featurize-bert"]["cached"]) == (1, texts)
    assert (third["featurize-word2vec"]["computed"], third["featurize-word2vec"]["cached"]) == (1, texts)
    trained = ("train-word2vec", "train-head", "train-static")
    for s in trained:                     # 1 of 61 documents (1.6 %): the default policy keeps the models
        assert third[s]["computed"] == 0 and 'retrain policy "changed"' in third[s]["note"], third[s]
        assert third[s]["stale"]["added"] == 1 and third[s]["stale"]["documents"] == 61
    assert store.corpus("topics").snapshot().id != snapshot
    assert store.open("bert_features", store.resolve_linked("topics", "bert_features")).read().num_rows == texts + 1
    forced = by_stage(run(config, "--retrain"))
    assert all(forced[s]["computed"] == 1 and "--retrain" in forced[s]["note"] for s in trained), forced
    assert all(forced[s]["computed"] == 0 for s in ("ingest", "featurize-bert", "featurize-word2vec"))
    assert all(by_stage(run(config))[s]["computed"] == 0 for s in trained)   # trained on this snapshot now


def test_a_config_change_recomputes_only_the_stage_it_affects(first_run, tiny_bert):
    tmp, folder, config, _ = first_run
    changed = write_config(tmp / "changed.toml", tmp / "store", folder, tiny_bert, tmp / "vec.txt",
                           head_weight_decay=0.5)
    stages = by_stage(run(changed))
    assert stages["train-head"]["computed"] == 1
    assert all(s["computed"] == 0 for name, s in stages.items() if name != "train-head"), stages


def test_store_option_overrides_the_config_store(first_run, tmp_path):
    _, _, config, _ = first_run
    r = runner.invoke(app, ["--store", str(tmp_path / "other"), "run", str(config), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["store"] == str(tmp_path / "other")
    assert FeatureStore(tmp_path / "other").corpora() == ["topics"]


def test_config_files_toml_and_yaml_agree_and_errors_name_the_key(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('store = "s"\n[[corpora]]\nname = "n"\nsources = [{path = "d", format = "jsonl"}]\n'
                    '[word2vec]\nenabled = false\ndim = 50\n[head]\nhidden = 32\n')
    yaml = tmp_path / "c.yaml"
    yaml.write_text("store: s\ncorpora:\n  - name: n\n    sources: [{path: d, format: jsonl}]\n"
                    "word2vec: {enabled: false, dim: 50}\nhead: {hidden: 32}\n")
    a, b = load_config(toml), load_config(yaml)
    assert a == b and a.sgns.dim == 50 and a.word2vec.enabled is False and a.head.hidden == 32
    assert a.corpus_list()[0].sources[0].format == "jsonl"
    assert load_config(None).corpus_list()[0].name == "bbc"                 # the embedded default
    bad = tmp_path / "bad.toml"
    bad.write_text("[head]\nhiden = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*\[head\].*hiden"):
        load_config(bad)
    bad.write_text("[heads]\n")
    with pytest.raises(ConfigError, match="unknown key.*heads"):
        load_config(bad)
    bad.write_text("[head]\nweight_decay = -1\n")
    with pytest.raises(ConfigError, match=r"\[head\]"):
        load_config(bad)
    r = runner.invoke(app, ["run", str(bad)])
    assert r.exit_code == 2 and "bad.toml: [head]" in r.output and "weight_decay" in r.output

"""A command given no options builds what the default run config holds.

The flows are stand-ins that record their arguments and stop the command (nothing runs,
nothing imports torch or Prefect), so this checks exactly what each command hands its flow.
"""

import types
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from embcache.flows.errors import FlowError
from embcache.flows.run_config import RunConfig
from embcache.pipeline.configs import FinetuneConfig, Source, TokenizeConfig
from embcache.cli.main import app

runner = CliRunner()
DEFAULT = RunConfig()


class Recorded(FlowError):
    """Raised by a stand-in flow once it has its arguments: the command stops with exit 2."""


class NoServer:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @contextmanager
    def ready(self):
        yield


@pytest.fixture
def flows(monkeypatch):
    """Stand-ins for the flow modules the commands import; `calls[name]` is (args, kwargs)."""
    calls = {}

    def stand_in(name):
        def flow(*args, **kwargs):
            calls[name] = (args, kwargs)
            raise Recorded(name, "recorded")
        return flow

    monkeypatch.setattr("embcache.flows.serve.TemporaryAPI", NoServer)
    for module, names in {"featurize_flows": ["ingest_flow", "featurize_bert_flow"],
                          "word2vec_flows": ["featurize_word2vec_flow", "train_word2vec_flow"],
                          "train_flows": ["train_head_flow", "train_static_flow", "finetune_flow",
                                          "compare_flow"]}.items():
        fake = types.ModuleType(f"embcache.flows.{module}")
        for name in names:
            setattr(fake, name, stand_in(name))
        monkeypatch.setitem(__import__("sys").modules, f"embcache.flows.{module}", fake)
    return calls


def invoke(tmp_path, *args):
    (tmp_path / "corpora").mkdir(exist_ok=True)          # a store (commands refuse one that does not exist)
    r = runner.invoke(app, ["--store", str(tmp_path), *args])
    assert r.exit_code == 2 and "recorded" in r.stderr, r.output


def test_train_static_without_options_is_the_run_configs_static_stage(flows, tmp_path):
    invoke(tmp_path, "train", "static", "topics")
    (corpus, name, vectors, config), kw = flows["train_static_flow"]
    st = DEFAULT.static_stage
    assert config == DEFAULT.static
    assert (name, vectors, kw["vectors_format"], kw["split_seed"]) == (st.name, st.vectors, st.vectors_format,
                                                                       st.split_seed)


def test_train_head_without_options_is_the_run_configs_head_stage(flows, tmp_path):
    invoke(tmp_path, "train", "head", "topics")
    (corpus, name, config, split_seed), _ = flows["train_head_flow"]
    assert config == DEFAULT.head
    assert (name, split_seed) == (DEFAULT.head_stage.name, DEFAULT.head_stage.split_seed)


def test_featurize_bert_without_options_is_the_run_configs_bert_section(flows, tmp_path):
    invoke(tmp_path, "featurize", "bert", "topics")
    (corpus, model, tokenize, encode), kw = flows["featurize_bert_flow"]
    assert (model, tokenize, encode) == (DEFAULT.model, DEFAULT.tokenize, DEFAULT.encode)
    assert set(kw) == {"store"}                       # shard sizes: the flow's own defaults


def test_word2vec_without_options_is_the_run_configs_word2vec_section(flows, tmp_path):
    invoke(tmp_path, "featurize", "word2vec", "topics")
    (corpus, words, skipgram, epochs_of_examples, seed, extend), _ = flows["featurize_word2vec_flow"]
    assert (words, skipgram) == (DEFAULT.words, DEFAULT.skipgram)
    assert (epochs_of_examples, seed) == (DEFAULT.word2vec.epochs_of_examples, DEFAULT.word2vec.seed)
    invoke(tmp_path, "train", "word2vec", "topics")
    (corpus, sgns, seed, freeze_existing, finetune_lr_scale), _ = flows["train_word2vec_flow"]
    assert (sgns, seed, finetune_lr_scale) == (DEFAULT.sgns, DEFAULT.word2vec.seed, DEFAULT.sgns.other_rows_lr_scale)


def test_ingest_without_options_is_the_run_configs_ingest_section(flows, tmp_path):
    invoke(tmp_path, "ingest", "topics", "data/*.txt")
    (corpus, sources, config), _ = flows["ingest_flow"]
    assert config == DEFAULT.ingest and sources == [Source("data/*.txt")]


def test_compare_and_finetune_without_options(flows, tmp_path):
    invoke(tmp_path, "compare", "topics")
    (corpus, vectors, trainable, finetune, model, max_length, split_seed), _ = flows["compare_flow"]
    assert (vectors, trainable, finetune) == (DEFAULT.static_stage.vectors, DEFAULT.compare.trainable,
                                              DEFAULT.finetune)
    assert all(type(t) is str for t in trainable)
    assert (model, max_length) == (DEFAULT.model, DEFAULT.tokenize.max_length)
    invoke(tmp_path, "finetune", "topics")
    (corpus, name, model, max_length, config, split_seed, resume), _ = flows["finetune_flow"]
    assert (config, max_length, resume) == (FinetuneConfig(), TokenizeConfig().max_length, True)


def test_options_reach_the_configs(flows, tmp_path):
    invoke(tmp_path, "train", "static", "topics", "--trainable", "all", "--encoder", "cnn", "--epochs", "3",
           "--special-token", "<num>", "--vectors-format", "glove")
    (_, _, _, config), kw = flows["train_static_flow"]
    assert (config.trainable, config.encoder, config.epochs, config.specials) == ("all", "cnn", 3, ("<num>",))
    assert kw["vectors_format"] == "glove"
    invoke(tmp_path, "compare", "topics", "--trainable", "none", "--unfreeze-epochs", "2")
    (_, _, trainable, finetune, *_), _ = flows["compare_flow"]
    assert trainable == ("none",) and finetune.unfreeze_epochs == 2 and finetune.freeze_epochs == 3


def test_a_choice_outside_the_literal_is_a_usage_error(tmp_path):
    r = runner.invoke(app, ["--store", str(tmp_path), "train", "static", "topics", "--trainable", "some"])
    assert r.exit_code == 2 and "some" in r.output

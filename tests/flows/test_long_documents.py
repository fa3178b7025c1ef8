"""`--long-documents windows` through the real flows, store and CLI, with the tiny BERT."""

import numpy as np
import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.pipeline.encode import EncodeConfig, encode_texts
from embcache.pipeline.model import load_model, load_tokenizer
from embcache.pipeline.tokenize import TokenizeConfig
from embcache.stages import bert
from embcache.storage import FeatureStore
from embcache.storage.query import as_matrix
from tests.pipeline.conftest import WORDS

pytestmark = pytest.mark.usefixtures("prefect_engine")

TEXTS = {"short.txt": "the cat sat on the mat",                              # 8 tokens: one window of 8
         "long.txt": " ".join(WORDS[i % len(WORDS)] for i in range(30)),     # 32 tokens: 5 windows of 8
         "mid.txt": "the team won the game in the new year"}                # 11 tokens: 2 windows


@pytest.fixture
def corpus(tmp_path):
    from embcache.flows.featurize_flows import ingest_flow
    from embcache.pipeline.ingest import IngestConfig, Source
    docs, store = tmp_path / "docs", str(tmp_path / "store")
    docs.mkdir()
    for name, text in TEXTS.items():
        (docs / name).write_text(text)
    ingest_flow("news", [Source(str(docs), format="files")], IngestConfig(), store=store)
    return store


def featurize(store, tiny_bert, tokenize):
    from embcache.flows.featurize_flows import featurize_bert_flow
    return featurize_bert_flow("news", tiny_bert, tokenize, EncodeConfig(), store=store, encode_shard_docs=2)


def stored(store, fingerprint):
    joined = FeatureStore(store).corpus_features("news", "bert_features", fingerprint)
    return {d: v for d, v in zip(joined["doc_id"].to_pylist(), as_matrix(joined["vector"]))}


def test_windows_flow_stores_pooled_vectors_under_its_own_fingerprints(corpus, tiny_bert):
    cut = featurize(corpus, tiny_bert, TokenizeConfig(max_length=8))
    assert (cut.truncated, cut.split) == (2, None)
    tok = TokenizeConfig(max_length=8, long_documents="windows")
    win = featurize(corpus, tiny_bert, tok)
    assert win.tokens_fingerprint != cut.tokens_fingerprint
    assert win.features_fingerprint != cut.features_fingerprint
    assert (win.encode.computed, win.truncated, win.split, win.windows) == (3, 0, 2, 8)
    got = stored(corpus, win.features_fingerprint)
    tokenizer, model = load_tokenizer(tiny_bert), load_model(tiny_bert)
    names = list(TEXTS)
    direct = encode_texts([TEXTS[n] for n in names], tokenizer, model, tok, EncodeConfig())
    for name, vec in zip(names, direct):
        np.testing.assert_allclose(got[name], vec, atol=1e-5)
    meta = FeatureStore(corpus).open("bert_features", win.features_fingerprint).saved_spec()["meta"]
    np.testing.assert_allclose(bert.encode_query(meta, [TEXTS["long.txt"]])[0], got["long.txt"], atol=1e-5)
    again = featurize(corpus, tiny_bert, tok)
    assert (again.tokenize.computed, again.encode.computed) == (0, 0)
    capped = featurize(corpus, tiny_bert, TokenizeConfig(max_length=8, long_documents="windows", max_windows=2))
    assert capped.features_fingerprint not in (win.features_fingerprint, cut.features_fingerprint)
    assert (capped.truncated, capped.split, capped.windows) == (1, 2, 5)


def test_cli_and_report_say_how_texts_were_split(corpus, tiny_bert):
    from embcache.stages.report import truncation_section
    r = CliRunner().invoke(app, ["--store", corpus, "featurize", "bert", "news", "--model", tiny_bert,
                                 "--max-length", "8", "--long-documents", "windows", "--max-windows", "2"])
    assert r.exit_code == 0, r.output
    assert "2 of 3 texts (67%) were split into 4 windows of 8 tokens" in r.stdout
    assert "1 of 3 texts were cut after 2 windows: raise --max-windows" in r.stdout
    section = truncation_section(FeatureStore(corpus), "news")
    assert "2 of 3 texts (67 %) were split into 4 windows of 8 tokens" in section and "--max-windows" in section

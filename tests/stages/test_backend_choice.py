"""backend="auto": measured once per (machine, model, threads), kept in the store, then read back."""

import json

import numpy as np
import pytest
import torch

from embcache.pipeline.configs import EncodeConfig
from embcache.pipeline.encode import encode
from embcache.pipeline.model import load_tokenizer
from embcache.pipeline.tokenize import TokenizeConfig, tokenize
from embcache.stages import backend_choice, bert
from tests.pipeline.conftest import WORDS

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture
def ids(tiny_bert):
    rng = np.random.default_rng(5)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 40))) for _ in range(24)]
    return tokenize(texts, load_tokenizer(tiny_bert), TokenizeConfig(max_length=48)).column("input_ids")


@pytest.fixture(autouse=True)
def fresh_process_memory():
    backend_choice._CHOSEN.clear()          # as a new process starts
    yield
    backend_choice._CHOSEN.clear()


def files(store) -> list:
    return sorted((store / "derived" / "backend").glob("*.json"))


def test_measured_once_then_read_from_the_store(tmp_path, tiny_bert, ids):
    store, enc = tmp_path / "store", EncodeConfig(threads=1)
    first = bert.chosen_backend(str(store), tiny_bert, enc, None, ids)
    assert first["source"] == "measured" and first["backend"] in ("torch", "onnx")
    assert set(first["measured"]["seconds"]) == {"torch", "onnx"}
    assert first["backend"] == min(first["measured"]["seconds"], key=first["measured"]["seconds"].get)
    [path] = files(store)
    on_disk = json.loads(path.read_text())
    assert on_disk["format"] == "embcache.backend-choice" and on_disk["format_version"] == 1
    assert on_disk["machine"] == backend_choice.machine() and on_disk["threads"] == 1
    assert bert.chosen_backend(str(store), tiny_bert, enc, None, ids)["source"] == "process"
    backend_choice._CHOSEN.clear()
    again = bert.chosen_backend(str(store), tiny_bert, enc, None, sample=None)   # no sample: nothing to time
    assert again["source"] == "store" and again["backend"] == first["backend"]
    # the encoder cached_encoder hands out is the chosen one
    model = bert.cached_encoder(str(store), tiny_bert, enc, None, sample=ids)
    assert isinstance(model, torch.nn.Module) == (first["backend"] == "torch")
    np.testing.assert_allclose(encode(ids, model, enc), encode(ids, bert.cached_model(tiny_bert, "none"), enc),
                               atol=1e-4, rtol=0)


def test_keyed_by_threads_model_and_machine(tmp_path, tiny_bert, ids):
    store = tmp_path / "store"
    one = bert.chosen_backend(str(store), tiny_bert, EncodeConfig(threads=1), None, ids)
    two = bert.chosen_backend(str(store), tiny_bert, EncodeConfig(threads=2), None, ids)
    assert two["source"] == "measured" and len(files(store)) == 2 and one["key"] != two["key"]
    model = one["model"]
    assert {r["threads"] for r in backend_choice.recorded(str(store), model)} == {1, 2}
    assert backend_choice.recorded(str(store), "another model's digests") == []
    elsewhere = dict(backend_choice.machine(), host="another-host")
    assert backend_choice.choice_key(model, 1, elsewhere) != one["key"]
    # a record that names another machine (a copied store) is not this machine's answer: measured again
    path = store / "derived" / "backend" / f"{one['key']}.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "machine": elsewhere}))
    backend_choice._CHOSEN.clear()
    assert bert.chosen_backend(str(store), tiny_bert, EncodeConfig(threads=1), None, ids)["source"] == "measured"
    assert json.loads(path.read_text())["machine"] == backend_choice.machine()
    path.write_text("{not json")                                  # damaged: measured again, replaced
    backend_choice._CHOSEN.clear()
    assert bert.chosen_backend(str(store), tiny_bert, EncodeConfig(threads=1), None, ids)["source"] == "measured"
    assert json.loads(path.read_text())["key"] == one["key"]


def test_auto_needs_no_measurement_where_only_torch_can_run(tmp_path, tiny_bert, ids):
    store = tmp_path / "store"
    bf16 = bert.cached_encoder(str(store), tiny_bert, EncodeConfig(precision="bf16"), None, sample=ids)
    assert next(bf16.parameters()).dtype == torch.bfloat16 and files(store) == []
    int8 = bert.cached_encoder(str(store), tiny_bert, EncodeConfig(quantize="int8"), None, sample=ids)
    assert isinstance(int8, torch.nn.Module) and files(store) == []
    # auto with nothing to time on and nothing on record: torch, and nothing written
    assert bert.chosen_backend(str(store), tiny_bert, EncodeConfig(), None, sample=None) is None
    assert isinstance(bert.cached_encoder(str(store), tiny_bert, EncodeConfig(), None), torch.nn.Module)
    assert files(store) == []

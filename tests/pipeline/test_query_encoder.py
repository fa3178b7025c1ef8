"""pipeline/query_encoder.py: query texts through an ONNX export and tokenizer.json, without torch,
equal to the torch path (tokenize + encode_tokens) within 1e-4 for every setting it accepts."""

import shutil

import numpy as np
import pytest

from embcache.pipeline.configs import EncodeConfig, TokenizeConfig

pytest.importorskip("onnxruntime")

TEXTS = ["the cat sat on the mat", "A market, a bank and the team won the new game in the year",
         "", "people said the film would win " * 6]


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    """(model folder with tokenizer.json, the ONNX export's path, its key)."""
    from transformers import AutoTokenizer

    from embcache.pipeline.backends import export_onnx
    from embcache.pipeline.model import load_model
    root = tmp_path_factory.mktemp("query-encoder")
    model = root / "model"
    shutil.copytree(tiny_bert, model)
    AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True).save_pretrained(model)
    path = export_onnx(load_model(str(model)), root / "onnx" / "k123.onnx", "k123")
    return str(model), path, "k123"


@pytest.mark.parametrize("tok, enc", [
    (TokenizeConfig(32), EncodeConfig(normalize="none")),
    (TokenizeConfig(32), EncodeConfig(normalize="l2", pooling="cls")),
    (TokenizeConfig(8, "windows"), EncodeConfig(normalize="l2")),
    (TokenizeConfig(8, "windows", max_windows=2), EncodeConfig(normalize="none", pooling="pooler", batch_tokens=16)),
])
def test_equal_to_the_torch_path(exported, tok, enc):
    from embcache.pipeline.encode import encode_texts
    from embcache.pipeline.model import load_model, load_tokenizer
    from embcache.pipeline.query_encoder import OnnxQueryEncoder, load_export, load_tokenizer_json
    model, path, key = exported
    config = load_export(path, key)
    encoder = OnnxQueryEncoder(path, config, load_tokenizer_json(model), tok, enc, threads=1)
    want = encode_texts(TEXTS, load_tokenizer(model), load_model(model), tok, enc)
    np.testing.assert_allclose(encoder(TEXTS), want, atol=1e-4)


def test_an_export_that_does_not_match_its_sidecar_is_not_used(exported, tmp_path):
    from embcache.pipeline.query_encoder import load_export
    model, path, key = exported
    assert load_export(path, key) is not None and load_export(path, "another-key") is None
    copy = tmp_path / "k123.onnx"
    shutil.copy(path, copy)
    shutil.copy(path.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert load_export(copy, key) is None                    # flipped: the caller falls back to torch


def test_int8_per_channel_equals_the_featurize_path(exported):
    """The demo's setting: ONNX Runtime's int8 per channel, found beside the plain export, gives what
    featurize's OnnxModel gives for the same quantized file."""
    from embcache.pipeline.backends import OnnxModel, _quantized
    from embcache.pipeline.encode import encode_texts
    from embcache.pipeline.model import load_tokenizer
    from embcache.pipeline.query_encoder import OnnxQueryEncoder, load_export, load_tokenizer_json, quantized_export
    model, path, key = exported
    config = load_export(path, key)
    assert quantized_export(path) is None                          # none made yet: the caller uses torch
    int8 = _quantized(path)
    assert quantized_export(path) == int8
    tok, enc = TokenizeConfig(32), EncodeConfig(normalize="l2", quantize="int8-channel", backend="onnx")
    encoder = OnnxQueryEncoder(int8, config, load_tokenizer_json(model), tok, enc, threads=1)
    from embcache.pipeline.model import load_model
    onnx = OnnxModel(int8, load_model(model).config, threads=1, quantize="int8-channel")
    want = encode_texts(TEXTS, load_tokenizer(model), onnx, tok, enc)
    np.testing.assert_allclose(encoder(TEXTS), want, atol=1e-4)

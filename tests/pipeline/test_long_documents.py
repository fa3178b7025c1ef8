"""TokenizeConfig.long_documents="windows": every max_length window tokenized, their vectors averaged."""

import numpy as np
import pytest
import torch

from embcache.pipeline.configs import output_fields
from embcache.pipeline.encode import EncodeConfig, encode, encode_texts, encode_tokens, encode_windows
from embcache.pipeline.errors import PipelineError
from embcache.pipeline.model import load_model, load_tokenizer
from embcache.pipeline.tokenize import SCHEMA, TokenizeConfig, schema, tokenize

from .conftest import WORDS

SHORT = "the cat sat on the mat"                                            # 8 tokens with [CLS]/[SEP]
LONG = " ".join(WORDS[i % len(WORDS)] for i in range(36))                  # 36 words: 6 windows of 8


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    return load_tokenizer(tiny_bert), load_model(tiny_bert)


def windows(**kw) -> TokenizeConfig:
    return TokenizeConfig(max_length=8, long_documents="windows", **kw)


def test_windows_cover_the_whole_text_and_the_first_is_truncates_row(tiny):
    tok = tiny[0]
    cut = tokenize([SHORT, LONG, ""], tok, TokenizeConfig(max_length=8))
    win = tokenize([SHORT, LONG, ""], tok, windows())
    assert cut.schema == SCHEMA and win.schema == schema(windows())
    assert win.column("input_ids").to_pylist() == cut.column("input_ids").to_pylist()   # finetune reads these
    assert win.column("windows").to_pylist() == [1, 6, 1]
    assert cut.column("truncated").to_pylist() == [False, True, False]
    assert win.column("truncated").to_pylist() == [False, False, False]                 # nothing left out
    long_windows = [win.column("input_ids")[1].as_py(), *win.column("more_windows")[1].as_py()]
    assert all(len(w) <= 8 and w[0] == tok.cls_token_id and w[-1] == tok.sep_token_id for w in long_windows)
    whole = tok(LONG, add_special_tokens=False)["input_ids"]
    assert [t for w in long_windows for t in w[1:-1]] == whole                          # in order, no overlap


def test_max_windows_keeps_the_first_k_and_marks_the_rest_cut(tiny):
    full = tokenize([SHORT, LONG], tiny[0], windows())
    capped = tokenize([SHORT, LONG], tiny[0], windows(max_windows=2))
    assert capped.column("windows").to_pylist() == [1, 2]
    assert capped.column("truncated").to_pylist() == [False, True]
    assert capped.column("more_windows")[1].as_py() == full.column("more_windows")[1].as_py()[:1]


@pytest.mark.parametrize("normalize", ["none", "l2"])
def test_a_short_text_gets_the_same_vector_under_both_policies(tiny, normalize):
    tok, model = tiny
    enc = EncodeConfig(normalize=normalize)
    cut = encode_texts([SHORT, LONG], tok, model, TokenizeConfig(max_length=8), enc)
    win = encode_texts([SHORT, LONG], tok, model, windows(), enc)
    np.testing.assert_array_equal(win[0], cut[0])                             # one window: bit for bit
    assert not np.allclose(win[1], cut[1], atol=1e-3)                          # the long one sees more


@pytest.mark.parametrize("normalize", ["none", "l2"])
@pytest.mark.parametrize("max_windows", [0, 3])
def test_a_long_text_is_the_mean_of_its_windows_encoded_alone(tiny, normalize, max_windows):
    tok, model = tiny
    table = tokenize([LONG, SHORT], tok, windows(max_windows=max_windows))
    got = encode_tokens(table, model, EncodeConfig(normalize=normalize, batch_tokens=24))   # windows share batches
    rows = [table.column("input_ids")[0].as_py(), *table.column("more_windows")[0].as_py()]
    assert len(rows) == (max_windows or 6)
    with torch.no_grad():                                                     # each window alone, no padding
        alone = np.stack([model(input_ids=torch.tensor([r])).last_hidden_state[0].mean(0).numpy() for r in rows])
    if normalize == "l2":
        alone /= np.linalg.norm(alone, axis=1, keepdims=True)
    want = alone.mean(axis=0)
    if normalize == "l2":
        want /= np.linalg.norm(want)
    np.testing.assert_allclose(got[0], want, atol=1e-5, rtol=0)
    assert got.shape == (2, model.config.hidden_size)


def test_encode_windows_keeps_order_dtype_and_refuses_a_text_without_windows(tiny):
    model = tiny[1]
    a, b = [101, 10, 11, 102], [101, 12, 102]
    got = encode_windows([[a, b], [b], [a]], model, EncodeConfig(dtype="float16"))
    single = encode([b, a], model, EncodeConfig(dtype="float16"))
    assert got.dtype == np.float16 and got.shape == (3, 32)
    np.testing.assert_array_equal(got[1:], single)
    assert encode_windows([], model, EncodeConfig()).shape == (0, 32)
    with pytest.raises(PipelineError, match=r"windows\[1\]"):
        encode_windows([[a], []], model, EncodeConfig())


def test_the_policy_is_part_of_the_hashed_config_and_checked():
    assert output_fields(TokenizeConfig()) == {"max_length": 256}          # added later: old stores keep theirs
    assert output_fields(TokenizeConfig(long_documents="windows")) != output_fields(TokenizeConfig())
    assert output_fields(windows(max_windows=2)) != output_fields(windows())
    for bad in ({"long_documents": "chunks"}, {"max_windows": -1}, {"max_windows": 1.5},
                {"max_windows": 2}):                                          # a cap means windows
        with pytest.raises(PipelineError, match=next(iter(bad))):
            TokenizeConfig(**bad)

import numpy as np
import pyarrow as pa
import pytest

from embcache.pipeline.errors import PipelineError
from embcache.pipeline.model import load_tokenizer
from embcache.pipeline.tokenize import SCHEMA, TokenizeConfig, tokenize


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return load_tokenizer(tiny_bert)


def words(n: int) -> str:
    """n whole-word tokens of the tiny vocabulary: n + 2 tokens with [CLS] and [SEP]."""
    return " ".join(["cat", "sat", "on", "the", "mat"][i % 5] for i in range(n))


def test_schema_and_special_tokens(tokenizer):
    table = tokenize(["the cat sat", ""], tokenizer, TokenizeConfig(max_length=16))
    assert table.schema == SCHEMA
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert table.column("input_ids").to_pylist() == [
        [cls, *tokenizer.convert_tokens_to_ids(["the", "cat", "sat"]), sep], [cls, sep]]
    assert table.column("length").to_pylist() == [5, 2]       # special tokens counted
    assert table.column("truncated").to_pylist() == [False, False]


@pytest.mark.parametrize("max_length", [4, 10])
def test_truncated_exactly_when_longer_than_max_length(tokenizer, max_length):
    texts = [words(n) for n in range(0, 2 * max_length)]
    table = tokenize(texts, tokenizer, TokenizeConfig(max_length=max_length))
    for text, ids, length, truncated in zip(texts, *(table.column(c).to_pylist() for c in SCHEMA.names)):
        full = tokenizer(text)["input_ids"]                     # untruncated, with specials
        assert truncated == (len(full) > max_length)
        assert length == len(ids) == min(len(full), max_length)
        expected = full if not truncated else full[:max_length - 1] + [tokenizer.sep_token_id]
        assert ids == expected


def test_batched_equals_one_by_one_in_order(tokenizer):
    texts = ["Quarterly earnings beat analyst expectations!", "the cat", "Sitting cats, 42 dogs.",
             words(30), "unknownword zzz"]
    config = TokenizeConfig(max_length=12)
    batched = tokenize(texts, tokenizer, config)
    singles = pa.concat_tables([tokenize([t], tokenizer, config) for t in texts])
    assert batched.equals(singles)


def test_offsets_are_compact_int32(tokenizer):
    table = tokenize([words(3), words(7)], tokenizer, TokenizeConfig(max_length=8))
    column = table.column("input_ids").combine_chunks()
    assert column.type == pa.list_(pa.int32())
    assert np.asarray(column.offsets).tolist() == [0, 5, 13]  # no padding stored


def test_empty_input(tokenizer):
    table = tokenize([], tokenizer, TokenizeConfig(max_length=32))
    assert table.num_rows == 0 and table.schema == SCHEMA


@pytest.mark.parametrize("max_length", [0, 2, 65])
def test_bad_max_length_refused(tokenizer, max_length):
    # 0: not positive; 2: only room for [CLS] [SEP]; 65: beyond the tiny model's 64 positions
    with pytest.raises(PipelineError, match="max_length"):
        tokenize(["the cat"], tokenizer, TokenizeConfig(max_length=max_length))


def test_non_text_refused(tokenizer):
    with pytest.raises(PipelineError, match=r"texts\[1\]"):
        tokenize(["the cat", None], tokenizer, TokenizeConfig(max_length=32))


def test_chunked_calls_give_the_same_rows_as_one_text_at_a_time(tiny_bert):
    """tokenize() calls the tokenizer TEXTS_PER_CALL texts at a time to bound its memory."""
    from embcache.pipeline.model import load_tokenizer
    from embcache.pipeline.tokenize import TEXTS_PER_CALL, TokenizeConfig, tokenize
    tok = load_tokenizer(tiny_bert)
    words = "the cat sat on the mat and the dog won the game in the new year".split()
    texts = [" ".join(words[: 1 + i % len(words)] * (1 + i % 3)) for i in range(2 * TEXTS_PER_CALL + 7)]
    config = TokenizeConfig(max_length=12)
    whole = tokenize(texts, tok, config)
    one_by_one = [tokenize([t], tok, config).to_pylist()[0] for t in texts]
    assert whole.num_rows == len(texts) and whole.to_pylist() == one_by_one
    assert 0 < sum(whole["truncated"].to_pylist()) < len(texts)


def test_options_added_later_leave_existing_fingerprints_alone():
    """A store made before --long-documents keeps its bert_tokens/bert_features (no re-encode on upgrade)."""
    from embcache.pipeline.configs import TokenizeConfig, output_fields
    assert output_fields(TokenizeConfig()) == {"max_length": 256}
    assert output_fields(TokenizeConfig(long_documents="windows")) == {"max_length": 256, "long_documents": "windows"}
    assert output_fields(TokenizeConfig(long_documents="windows", max_windows=2)) == {
        "max_length": 256, "long_documents": "windows", "max_windows": 2}

from collections import Counter
from pathlib import Path

import gensim
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embcache.pipeline.errors import PipelineError
from embcache.pipeline.words import UNK, Vocabulary, WordConfig, tokenize_words

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"


@pytest.fixture(scope="module")
def lee_tokens() -> list[list[str]]:
    """gensim's Lee corpus, one document a line (~300 docs, 60k words)."""
    return tokenize_words(LEE.read_text(encoding="utf-8", errors="replace").splitlines(), WordConfig())


def test_tokenize_words_pattern_and_case():
    text = "Don't stop, O'Neill's well-known café_2 'quoted' 3.5"
    assert tokenize_words([text, ""], WordConfig()) == [
        ["don't", "stop", "o'neill's", "well", "known", "café", "2", "quoted", "3", "5"], []]
    assert tokenize_words(["The Cat"], WordConfig(lowercase=False)) == [["The", "Cat"]]
    assert tokenize_words(["a-b c"], WordConfig(pattern=r"\S+")) == [["a-b", "c"]]


@pytest.mark.parametrize("bad", [{"pattern": "("}, {"min_count": 0}, {"min_count": 2.5}])
def test_word_config_rejects(bad):
    with pytest.raises(PipelineError):
        WordConfig(**bad)


def test_tokenize_words_rejects_non_str():
    with pytest.raises(PipelineError, match=r"texts\[1\]"):
        tokenize_words(["fine", None], WordConfig())


def test_build_counts_min_count_and_order(lee_tokens):
    vocab = Vocabulary.build(lee_tokens, min_count=5)
    seen = Counter(w for doc in lee_tokens for w in doc)
    assert vocab.words[0] == UNK and vocab.version == 1 and vocab.counts.dtype == np.int64
    assert all(vocab.counts[i] == seen[w] >= 5 for i, w in enumerate(vocab.words) if i)
    assert set(vocab.words[1:]) == {w for w, n in seen.items() if n >= 5}
    assert vocab.rare == {w: n for w, n in seen.items() if n < 5}
    assert vocab.counts[0] == sum(vocab.rare.values())                       # <unk> = all rare occurrences
    keys = [(-vocab.counts[i], w) for i, w in enumerate(vocab.words) if i]
    assert keys == sorted(keys)                                              # most frequent first, ties by word
    assert len(Vocabulary.build(lee_tokens, min_count=20)) < len(vocab)


def test_encode_drops_or_maps_unknown(lee_tokens):
    vocab = Vocabulary.build(lee_tokens, min_count=5)
    docs = lee_tokens[:50] + [[], ["zzzz-not-a-word"]]
    ids, offsets = vocab.encode(docs)
    assert ids.dtype == np.int32 and offsets.dtype == np.int64 and len(offsets) == len(docs) + 1
    assert (ids > 0).all()
    decoded = [[vocab.words[i] for i in ids[a:b]] for a, b in zip(offsets[:-1], offsets[1:])]
    assert decoded == [[w for w in doc if w in vocab.words[1:]] for doc in docs]
    ids_unk, offsets_unk = vocab.encode(docs, unknown="unk")
    assert np.array_equal(np.diff(offsets_unk), [len(d) for d in docs])
    assert np.array_equal(ids_unk[ids_unk > 0], ids) and (ids_unk == 0).sum() > 0
    with pytest.raises(PipelineError):
        vocab.encode(docs, unknown="keep")


def test_extend_keeps_ids_and_matches_one_build(lee_tokens):
    half = len(lee_tokens) // 2
    old = Vocabulary.build(lee_tokens[:half], min_count=5)
    new = old.extend(lee_tokens[half:])
    whole = Vocabulary.build(lee_tokens, min_count=5)
    assert new.version == old.version + 1 and old.version == 1
    assert new.words[:len(old)] == old.words                                 # no id moves
    assert len(new) > len(old)
    assert set(new.words) == set(whole.words)                                # rare counts carried over
    by_word = dict(zip(whole.words, whole.counts.tolist()))
    assert dict(zip(new.words, new.counts.tolist())) == by_word
    assert new.rare == whole.rare
    appended = new.counts[len(old):]
    assert (np.diff(appended) <= 0).all()                                    # joiners most frequent first
    # the old vocabulary still encodes as before; new words were <unk> to it
    ids_old, _ = old.encode(lee_tokens[half:])
    ids_new, _ = new.encode(lee_tokens[half:])
    assert len(ids_new) > len(ids_old)
    assert np.array_equal(ids_new[ids_new < len(old)], ids_old)


def test_arrow_and_parquet_round_trip(lee_tokens, tmp_path):
    vocab = Vocabulary.build(lee_tokens[:100], min_count=3).extend(lee_tokens[100:150])
    table = vocab.to_arrow()
    assert Vocabulary.from_arrow(table) == vocab
    pq.write_table(table, tmp_path / "vocab.parquet")
    back = Vocabulary.from_arrow(pq.read_table(tmp_path / "vocab.parquet"))
    assert back == vocab and back.words == vocab.words and back.rare == vocab.rare
    assert np.array_equal(back.counts, vocab.counts) and back.version == 2 and back.min_count == 3


def test_from_arrow_checks_format_version(lee_tokens):
    table = Vocabulary.build(lee_tokens[:20], min_count=2).to_arrow()
    meta = dict(table.schema.metadata)
    with pytest.raises(PipelineError, match="version '99'; this code reads 'embcache.vocabulary' version 1"):
        Vocabulary.from_arrow(table.replace_schema_metadata({**meta, b"format_version": b"99"}))
    with pytest.raises(PipelineError, match="not a vocabulary table"):
        Vocabulary.from_arrow(table.replace_schema_metadata({**meta, b"format": b"something.else"}))
    with pytest.raises(PipelineError, match="not a vocabulary table"):
        Vocabulary.from_arrow(pa.table({"word": ["<unk>"]}))


def test_digest_changes_iff_content_changes(lee_tokens):
    vocab = Vocabulary.build(lee_tokens[:100], min_count=5)
    assert Vocabulary.build(lee_tokens[:100], min_count=5).digest() == vocab.digest()
    assert Vocabulary.from_arrow(vocab.to_arrow()).digest() == vocab.digest()
    same = vocab.extend([])                                                  # new version, same content
    assert same.version == 2 and same.digest() == vocab.digest()
    others = [vocab.extend(lee_tokens[100:101]),                             # counts change
              vocab.extend([[vocab.words[1]]]),                              # one more occurrence
              vocab.extend([["brandnewword"]]),                              # a rare word appears
              Vocabulary.build(lee_tokens[:100], min_count=4)]               # min_count
    digests = {v.digest() for v in others}
    assert len(digests) == len(others) and vocab.digest() not in digests


def test_vocabulary_is_immutable(lee_tokens):
    vocab = Vocabulary.build(lee_tokens[:20], min_count=2)
    with pytest.raises(ValueError):
        vocab.counts[1] = 0
    with pytest.raises(AttributeError):
        vocab.version = 5
    with pytest.raises(PipelineError):
        Vocabulary(("cat",), np.array([1]), min_count=1)                      # id 0 must be <unk>
    with pytest.raises(TypeError):
        vocab.rare["brandnewword"] = 1

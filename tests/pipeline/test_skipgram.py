from pathlib import Path

import gensim
import numpy as np
import pytest
from scipy import stats

from embcache.pipeline.errors import PipelineError
from embcache.pipeline.skipgram import (EpochDraws, NoiseSampler, SkipGramConfig, keep_probability, make_examples,
                                        subsample)
from embcache.pipeline.words import Vocabulary, WordConfig, tokenize_words

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
KEYS = ("center", "doc", "contexts_negatives", "mask", "label")


def zipf_corpus(seed: int, docs: int = 300, vocab: int = 200):
    """Documents of 0–120 words drawn ∝ 1/rank; counts are the corpus's own (index 0: <unk>, 0)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    lengths = rng.integers(0, 121, size=docs)
    lengths[:3] = [0, 1, 2]                                                   # edge documents
    ids = rng.choice(np.arange(1, vocab + 1), size=lengths.sum(), p=p / p.sum()).astype(np.int32)
    offsets = np.r_[0, np.cumsum(lengths)]
    counts = np.bincount(ids, minlength=vocab + 1)
    return ids, offsets, counts


@pytest.fixture(scope="module")
def corpus():
    return zipf_corpus(0)


def drawn(kind: str, ids, offsets, counts, config: SkipGramConfig, seed: int, epoch: int = 0) -> dict:
    """The rows of make_examples (stored) or of the training kernel's draws (epoch), as make_examples gives them."""
    if kind == "stored":
        return make_examples(ids, offsets, counts, config, np.random.default_rng(seed))
    center, doc, cn, c = EpochDraws.of(counts, config, seed).draw(ids, offsets, epoch=epoch)
    cols, K = np.arange(cn.shape[1]), config.negatives
    return {"center": center, "doc": doc.astype(np.int32), "contexts_negatives": cn,
            "mask": (cols < (c * (1 + K))[:, None]).astype(np.uint8), "label": (cols < c[:, None]).astype(np.uint8)}


@pytest.mark.parametrize("formula", ["d2l", "gensim"])
def test_subsample_keep_rate_per_word(corpus, formula):
    ids, offsets, counts = corpus
    t = 2e-3
    reps = 20                                                                 # 20 draws of the same corpus
    rng = np.random.default_rng(1)
    kept = sum(np.bincount(subsample(ids, offsets, counts, t, rng, formula)[0], minlength=len(counts))
               for _ in range(reps))
    f = counts / counts[1:].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.minimum(1.0, np.sqrt(t / f) if formula == "d2l" else (np.sqrt(f / t) + 1) * t / f)
    p = np.nan_to_num(p, nan=1.0)
    n = counts * reps
    seen = counts > 0
    assert (p[seen] < 1).sum() > 20                                           # many words really thinned
    sigma = np.sqrt(n * p * (1 - p))
    assert (np.abs(kept - n * p)[seen] <= 5 * sigma[seen] + 1e-9).all()
    assert (kept[p == 1] == n[p == 1]).all()


def test_subsample_keeps_document_order(corpus):
    ids, offsets, counts = corpus
    new_ids, new_offsets = subsample(ids, offsets, counts, 1e-2, np.random.default_rng(2))
    assert new_ids.dtype == np.int32 and new_offsets.dtype == np.int64 and len(new_offsets) == len(offsets)
    for d in range(len(offsets) - 1):                                         # each doc: a subsequence
        rest = iter(ids[offsets[d]:offsets[d + 1]].tolist())
        assert all(w in rest for w in new_ids[new_offsets[d]:new_offsets[d + 1]].tolist())


@pytest.mark.parametrize("kind", ["stored", "epoch"])
def test_array_contract_mask_and_label(corpus, kind):
    ids, offsets, counts = corpus
    config = SkipGramConfig(subsample=1e-2, max_window=4, negatives=3)
    ex = drawn(kind, ids, offsets, counts, config, 3)
    n, L = len(ex["center"]), config.row_len
    assert L == 2 * 4 * (1 + 3) and n > 1000
    assert {k: (v.dtype, v.shape) for k, v in ex.items()} == {
        "center": (np.int32, (n,)), "doc": (np.int32, (n,)), "contexts_negatives": (np.int32, (n, L)),
        "mask": (np.uint8, (n, L)), "label": (np.uint8, (n, L))}
    mask, label, row = ex["mask"], ex["label"], ex["contexts_negatives"]
    c, filled = label.sum(1, dtype=np.int64), mask.sum(1, dtype=np.int64)
    assert set(np.unique(mask)) <= {0, 1} and set(np.unique(label)) <= {0, 1}
    assert (label <= mask).all() and (c >= 1).all()                           # label ⊆ mask, no empty centers
    assert np.array_equal(filled, c * (1 + 3))                                # K negatives per context
    cols = np.arange(L)
    assert np.array_equal(mask, cols < filled[:, None]) and np.array_equal(label, cols < c[:, None])
    assert (row[mask == 0] == 0).all() and (row[mask == 1] > 0).all()         # padding 0, never <unk>
    assert (np.diff(ex["doc"]) >= 0).all()
    assert not np.isin([0, 1], ex["doc"]).any()                               # docs of 0 and 1 words: no center


def expected_rows(sub_ids, sub_offsets, W):
    """Per center (in output order): its document, its word and every allowed context list (w = 1..W)."""
    for d in range(len(sub_offsets) - 1):
        doc = sub_ids[sub_offsets[d]:sub_offsets[d + 1]].tolist()
        if len(doc) < 2:
            continue
        for p, word in enumerate(doc):
            yield d, word, [doc[max(0, p - w):p] + doc[p + 1:p + 1 + w] for w in range(1, W + 1)]


def test_contexts_lie_in_the_window_after_subsampling(corpus):
    ids, offsets, counts = corpus
    config = SkipGramConfig(subsample=1e-2, max_window=3, negatives=2)
    ex = make_examples(ids, offsets, counts, config, np.random.default_rng(4))
    rng = np.random.default_rng(4)                                            # the same draws, in two steps
    sub_ids, sub_offsets = subsample(ids, offsets, counts, config.subsample, rng)
    two_step = make_examples(sub_ids, sub_offsets, counts, SkipGramConfig(None, 3, 2), rng)
    assert all(np.array_equal(ex[k], two_step[k]) for k in KEYS)
    rows = list(expected_rows(sub_ids, sub_offsets, config.max_window))
    assert len(rows) == len(ex["center"])
    row, label = ex["contexts_negatives"], ex["label"]
    for i, (doc, word, allowed) in enumerate(rows):
        contexts = row[i, :label[i].sum()].tolist()
        assert ex["doc"][i] == doc and ex["center"][i] == word and contexts in allowed


def test_epoch_draws_lie_in_the_window_and_change_with_the_epoch(corpus):
    ids, offsets, counts = corpus
    config = SkipGramConfig(max_window=3, negatives=2)
    ex = drawn("epoch", ids, offsets, counts, config, 4)
    rows = list(expected_rows(ids, offsets, config.max_window))
    assert len(rows) == len(ex["center"])
    for i, (doc, word, allowed) in enumerate(rows):
        contexts = ex["contexts_negatives"][i, :ex["label"][i].sum()].tolist()
        assert ex["doc"][i] == doc and ex["center"][i] == word and contexts in allowed
    again, other = drawn("epoch", ids, offsets, counts, config, 4), drawn("epoch", ids, offsets, counts, config, 4, 1)
    assert all(np.array_equal(ex[k], again[k]) for k in KEYS)                # a seed and an epoch: one draw
    assert not np.array_equal(ex["contexts_negatives"], other["contexts_negatives"])   # the next epoch: new


def test_epoch_draws_subsample_each_word_at_its_keep_rate():
    """Documents long enough that every kept word has a context: centers = kept words."""
    rng = np.random.default_rng(12)
    p = 1.0 / np.arange(1, 101)
    ids = rng.choice(np.arange(1, 101), size=40 * 300, p=p / p.sum()).astype(np.int32)
    offsets, counts = np.arange(0, len(ids) + 1, 300), np.bincount(ids, minlength=101)
    config, reps = SkipGramConfig(subsample=2e-3, subsample_formula="gensim", negatives=1), 10
    draws = EpochDraws.of(counts, config, seed=0)
    kept = sum(np.bincount(draws.draw(ids, offsets, epoch=e)[0], minlength=len(counts)) for e in range(reps))
    p = keep_probability(counts, 2e-3, "gensim")
    n = counts * reps
    assert (p[1:] < 1).sum() > 20
    assert (np.abs(kept - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1e-9).all()


@pytest.mark.parametrize("kind", ["stored", "epoch"])
def test_window_sizes_uniform(kind):
    """Far from document ends a center with window w has exactly 2w contexts."""
    rng = np.random.default_rng(5)
    W, docs, length = 5, 40, 500
    ids = rng.integers(1, 50, size=docs * length).astype(np.int32)
    offsets = np.arange(0, docs * length + 1, length)
    ex = drawn(kind, ids, offsets, np.bincount(ids, minlength=50),
               SkipGramConfig(subsample=None, max_window=W, negatives=1), 6)
    position = np.arange(len(ids)) % length
    inner = (position >= W) & (position < length - W)                         # a full window either side
    c = ex["label"].sum(1)[inner]
    assert (c % 2 == 0).all()
    observed = np.bincount(c // 2, minlength=W + 1)[1:]
    assert stats.chisquare(observed).pvalue > 1e-3


def test_noise_sampler_matches_count_power():
    counts = np.r_[7, np.arange(1, 301) ** 2]                                 # <unk> has a count: never drawn
    noise = NoiseSampler(counts)
    draws = noise.draw(400_000, np.random.default_rng(7))
    observed = np.bincount(draws, minlength=len(counts))
    assert observed[0] == 0 and draws.dtype == np.int32
    want = counts[1:] ** 0.75 / (counts[1:] ** 0.75).sum()
    np.testing.assert_allclose(noise.probs[1:], want)
    assert stats.chisquare(observed[1:], want * len(draws)).pvalue > 1e-3


@pytest.mark.parametrize("kind", ["stored", "epoch"])
def test_negatives_follow_count_power_and_avoid_their_context(corpus, kind):
    ids, offsets, counts = corpus
    K = 5
    ex = drawn(kind, ids, offsets, counts, SkipGramConfig(subsample=None, max_window=5, negatives=K), 8)
    row, label, mask = ex["contexts_negatives"], ex["label"], ex["mask"]
    c = label.sum(1, dtype=np.int64)
    negs, owner = [], []
    for i in range(len(row)):                                                 # negative k belongs to context k // K
        negs.append(row[i, c[i]:c[i] * (1 + K)])
        owner.append(np.repeat(row[i, :c[i]], K))
    negs, owner = np.concatenate(negs), np.concatenate(owner)
    assert len(negs) == (mask.sum() - label.sum()) and (negs != owner).all() and (negs > 0).all()
    # each negative is drawn ∝ count**0.75 over the words other than its own context word
    q = np.where(np.arange(len(counts)) > 0, counts, 0) ** 0.75
    q = q / q.sum()
    per_context = np.bincount(owner, minlength=len(counts))                   # negatives owned by each word
    expected = q * (per_context / (1 - q)).sum() - per_context * q / (1 - q)
    observed = np.bincount(negs, minlength=len(counts))
    big = expected >= 5
    assert big.sum() > 100 and observed[~big].sum() == 0                      # <unk> (0) never drawn
    obs, exp = observed[big], expected[big]
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


def test_same_seed_same_arrays_other_seed_differs(corpus):
    ids, offsets, counts = corpus
    config = SkipGramConfig()
    a = make_examples(ids, offsets, counts, config, np.random.default_rng(9))
    b = make_examples(ids, offsets, counts, config, np.random.default_rng(9))
    c = make_examples(ids, offsets, counts, config, np.random.default_rng(10))
    assert all(np.array_equal(a[k], b[k]) for k in KEYS)
    assert len(a["center"]) != len(c["center"]) or not np.array_equal(a["contexts_negatives"],
                                                                      c["contexts_negatives"])


def test_row_width_and_no_negatives(corpus):
    ids, offsets, counts = corpus
    wide = make_examples(ids, offsets, counts, SkipGramConfig(max_len=64), np.random.default_rng(11))
    base = make_examples(ids, offsets, counts, SkipGramConfig(), np.random.default_rng(11))
    assert wide["mask"].shape[1] == 64 and np.array_equal(wide["contexts_negatives"][:, :60],
                                                          base["contexts_negatives"])
    assert (wide["mask"][:, 60:] == 0).all()
    none = make_examples(ids, offsets, counts, SkipGramConfig(negatives=0, max_window=2), np.random.default_rng(0))
    assert none["mask"].shape[1] == 4 and np.array_equal(none["mask"], none["label"])


@pytest.mark.parametrize("bad", [{"max_len": 59}, {"max_window": 0}, {"negatives": -1},
                                 {"subsample": 0.0}, {"subsample": 2.0}, {"draws": "once"}])
def test_config_rejects(bad):
    with pytest.raises(PipelineError):
        SkipGramConfig(**bad)


def test_input_checks(corpus):
    ids, offsets, counts = corpus
    rng = np.random.default_rng(0)
    with pytest.raises(PipelineError, match="unk"):
        make_examples(np.r_[ids, 0], np.r_[offsets[:-1], len(ids) + 1], counts, SkipGramConfig(), rng)
    with pytest.raises(PipelineError, match="offsets"):
        make_examples(ids, offsets[:-1], counts, SkipGramConfig(), rng)
    with pytest.raises(PipelineError, match="ids"):
        make_examples(ids, offsets, counts[:10], SkipGramConfig(), rng)
    with pytest.raises(PipelineError, match="two words"):
        make_examples(np.ones(5, np.int32), [0, 5], [0, 5], SkipGramConfig(subsample=None), rng)


def test_lee_end_to_end_and_chunk_size_does_not_change_output():
    """The real pipeline: Lee text -> vocabulary -> examples; chunking is speed only."""
    tokens = tokenize_words(LEE.read_text(encoding="utf-8", errors="replace").splitlines(), WordConfig())
    vocab = Vocabulary.build(tokens, min_count=5)
    ids, offsets = vocab.encode(tokens)
    ex = make_examples(ids, offsets, vocab.counts, SkipGramConfig(), np.random.default_rng(0))
    few = ids[:offsets[20]], offsets[:21]                                     # 20 documents
    one = make_examples(*few, vocab.counts, SkipGramConfig(), np.random.default_rng(1), chunk_centers=1)
    for chunk in (7, 777, 10**9):
        other = make_examples(*few, vocab.counts, SkipGramConfig(), np.random.default_rng(1), chunk_centers=chunk)
        assert all(np.array_equal(other[k], one[k]) for k in KEYS)
    n = len(ex["center"])
    assert n == len(ids) - int((np.diff(offsets) == 1).sum())                 # no subsampling by default:
    thin = make_examples(ids, offsets, vocab.counts,                          # every word with a context
                         SkipGramConfig(subsample=1e-3, subsample_formula="gensim"), np.random.default_rng(0))
    assert 0.3 * len(ids) < len(thin["center"]) < n                           # subsampling thins the text
    c = ex["label"].sum(1)
    assert 3 < c.mean() < 6 and c.max() <= 10                                 # E[2w] = 6 less the doc edges
    assert (ex["mask"].sum(1) == 6 * c).all()


def test_no_centers_gives_empty_arrays():
    for ids, offsets in [([], [0]), ([1, 2], [0, 1, 2]), ([], [0, 0, 0])]:
        ex = make_examples(np.array(ids, np.int32), offsets, [0, 3, 4], SkipGramConfig(), np.random.default_rng(0))
        assert ex["contexts_negatives"].shape == ex["mask"].shape == (0, 60) and len(ex["doc"]) == 0


def test_named_recipes_set_only_their_fields():
    from embcache.pipeline.configs import SGNSConfig
    from embcache.pipeline.recipes import word2vec_recipe
    from embcache.pipeline.errors import PipelineError
    default_sg, default_sgns = word2vec_recipe("embcache", dim=50)
    assert default_sg == SkipGramConfig() and default_sgns == SGNSConfig(dim=50)
    assert (default_sg.subsample, default_sg.draws, default_sgns.lr, default_sgns.epochs, default_sgns.update) == \
        (None, "epoch", 0.05, 10, "pair")                                            # issue 30's defaults
    d2l_sg, d2l_sgns = word2vec_recipe("d2l")
    assert (d2l_sg.subsample, d2l_sg.subsample_formula, d2l_sg.draws, d2l_sgns.lr, d2l_sgns.update) == \
        (1e-4, "d2l", "stored", 0.025, "row")
    gensim_sg, gensim_sgns = word2vec_recipe("gensim", dim=50)
    assert (gensim_sg.subsample, gensim_sg.subsample_formula, gensim_sg.draws, gensim_sgns.lr, gensim_sgns.update,
            gensim_sgns.epochs, gensim_sgns.dim) == (1e-3, "gensim", "epoch", 0.025, "pair", 5, 50)
    assert d2l_sg.max_window == gensim_sg.max_window == default_sg.max_window      # the rest: defaults
    with pytest.raises(PipelineError):
        word2vec_recipe("glove")

"""SGNS training on gensim's lee corpus (60 k tokens), and one step checked against torch autograd."""

from collections import Counter
from pathlib import Path

import gensim
import numpy as np
import pytest
import torch
from gensim.utils import simple_preprocess

from embcache.pipeline.errors import PipelineError
from embcache.pipeline.sgns import SGNSConfig, init_vectors, train
from embcache.pipeline.skipgram import EpochDraws, SkipGramConfig, make_examples

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"


def skipgram_rows(ids: list[np.ndarray], counts: np.ndarray, rng: np.random.Generator,
                  window: int = 5, negative: int = 5, sample: float = 1e-4) -> dict[str, np.ndarray]:
    """The d2l input layout, vectorized: gensim's subsampling and reduced windows, 5 negatives
    per context from unigram^0.75. cn (N, 2W + 2W·K): window slots, then their negatives."""
    flat, sent = np.concatenate(ids), np.repeat(np.arange(len(ids)), [len(s) for s in ids])
    thr = sample * counts.sum()
    keep_p = (np.sqrt(counts / thr) + 1) * thr / np.maximum(counts, 1)                     # (V,)
    keep = rng.random(len(flat)) < keep_p[flat]
    flat, sent = flat[keep], sent[keep]                                                     # (T,)
    pos, reach = np.arange(len(flat)), rng.integers(1, window + 1, len(flat))
    ctx, ok = [], []
    for d in [d for d in range(-window, window + 1) if d]:
        j = np.clip(pos + d, 0, len(flat) - 1)
        ok.append((pos + d == j) & (sent[j] == sent) & (abs(d) <= reach))
        ctx.append(np.where(ok[-1], flat[j], 0))
    ctx, ok = np.stack(ctx, 1), np.stack(ok, 1)                                             # (T, 2W)
    rows = ok.any(1)
    ctx, ok, center = ctx[rows], ok[rows], flat[rows]
    weights = counts ** 0.75
    neg = rng.choice(len(counts), size=(len(center), ok.shape[1] * negative), p=weights / weights.sum())
    neg_ok = np.repeat(ok, negative, axis=1)                                                # (N, 2W·K)
    mask = np.concatenate([ok, neg_ok], 1).astype(np.uint8)
    return {"center": center.astype(np.int32),
            "contexts_negatives": np.concatenate([ctx, neg * neg_ok], 1).astype(np.int32),
            "mask": mask, "label": np.concatenate([ok, 0 * neg_ok], 1).astype(np.uint8)}


@pytest.fixture(scope="module")
def lee():
    """(word -> id, counts (V,), examples) for lee with min_count 5; id 0 is <unk>, count 0."""
    sentences = [simple_preprocess(line, max_len=15) for line in LEE.read_text(encoding="utf-8").splitlines()]
    counts = Counter(w for s in sentences for w in s)
    words = sorted((w for w, c in counts.items() if c >= 5), key=lambda w: (-counts[w], w))
    index = {w: i + 1 for i, w in enumerate(words)}
    ids = [np.array([index[w] for w in s if w in index], dtype=np.int64) for s in sentences]
    freq = np.array([0] + [counts[w] for w in words], dtype=np.float64)
    return index, freq, skipgram_rows(ids, freq, np.random.default_rng(0))


def cosine(vecs: np.ndarray, index: dict, a: str, b: str) -> float:
    u, v = vecs[index[a]], vecs[index[b]]
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_training_lowers_loss_and_relates_cooccurring_words(lee):
    index, freq, examples = lee
    config = SGNSConfig(dim=50, epochs=20, batch_size=2000, threads=1, update="row")   # gapped rows: per row
    center, context = init_vectors(len(freq), config.dim, np.random.default_rng(0))
    report = train([examples], center, context, config)
    assert report.loss_curve[0] == pytest.approx(np.log(2), abs=1e-3)   # zero context table: dot 0
    assert report.loss_curve[-1] < report.loss_curve[0] - 0.2
    assert report.examples == 20 * len(examples["center"])
    assert report.pairs == 20 * int(examples["mask"].sum())
    # lee is Australian news of 2001: the Middle East, Afghanistan, bushfires, cricket.
    for related, unrelated in [(("israeli", "palestinian"), ("israeli", "cricket")),
                               (("bin", "laden"), ("bin", "cricket"))]:
        assert cosine(center, index, *related) > cosine(center, index, *unrelated) + 0.3


def test_only_trainable_rows_change_in_both_tables(lee):
    index, freq, examples = lee
    config = SGNSConfig(dim=50, epochs=1, batch_size=1000, threads=2, update="row")   # Hogwild path too
    center, _ = init_vectors(len(freq), config.dim, np.random.default_rng(1))
    context = np.random.default_rng(2).normal(0, 0.05, center.shape).astype(np.float32)
    before = center.copy(), context.copy()
    trainable = np.arange(1, len(freq), 7)                                  # every 7th id, frequent ones too
    train([examples], center, context, config, trainable_rows=trainable)
    others = np.setdiff1d(np.arange(len(freq)), trainable)
    for now, then in zip((center, context), before):
        assert np.array_equal(now[others], then[others])
        changed = (now[trainable] != then[trainable]).any(axis=1)
        assert changed.mean() > 0.95                                        # all that occur in the examples


def test_deterministic_with_one_thread_and_a_seed(lee):
    _, freq, examples = lee
    config = SGNSConfig(dim=32, epochs=2, batch_size=3000, threads=1, update="row")
    runs = []
    for _ in range(2):
        center, context = init_vectors(len(freq), config.dim, np.random.default_rng(5))
        report = train(lambda epoch: [examples], center, context, config)
        runs.append((center, context, report.loss_curve))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]


def torch_sgd_steps(center, context, rows, lr, scale):
    """Reference: per row, autograd of sum(mask * BCE-with-logits) and one SGD step."""
    W, C = torch.tensor(center, dtype=torch.float64), torch.tensor(context, dtype=torch.float64)
    step = lr * torch.tensor(scale, dtype=torch.float64)[:, None]                         # (V, 1)
    losses = []
    for c, cn, mask, label in rows:
        W.requires_grad_(True), C.requires_grad_(True)
        logits = (W[c] * C[torch.tensor(cn)]).sum(-1)                                   # (L,)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.tensor(label, dtype=torch.float64), reduction="none")
        loss = (bce * torch.tensor(mask, dtype=torch.float64)).sum()
        loss.backward()
        with torch.no_grad():
            W, C = W - step * W.grad, C - step * C.grad
        losses.append(loss.item() / sum(mask))
    return W.numpy(), C.numpy(), losses


@pytest.mark.parametrize("trainable, other_scale", [(None, 0.0), ([2, 3, 5], 0.25)])
def test_a_step_is_the_autograd_sgd_step_on_masked_bce(trainable, other_scale):
    rng = np.random.default_rng(3)
    center, context = rng.normal(0, 0.7, (2, 7, 4)).astype(np.float32)     # dots of order 1
    rows = [(2, [3, 5, 1, 5, 6, 0], [1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]),  # 5 twice; 0 is padding
            (3, [2, 4, 6, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1, 0, 0, 1, 0, 0])]  # sees row 1's update
    batch = {"center": np.array([r[0] for r in rows], np.int32),
             "contexts_negatives": np.array([r[1] for r in rows], np.int32),
             "mask": np.array([r[2] for r in rows], np.uint8),
             "label": np.array([r[3] for r in rows], np.uint8)}
    scale = np.where(np.isin(np.arange(7), trainable), 1.0, other_scale) if trainable else np.ones(7)
    want_w, want_c, want_loss = torch_sgd_steps(center, context, rows, 0.5, scale)
    config = SGNSConfig(dim=4, epochs=1, lr=0.5, min_lr=0.5, batch_size=1, threads=1,
                        other_rows_lr_scale=other_scale, update="row")
    report = train([batch], center, context, config,
                   trainable_rows=None if trainable is None else np.array(trainable))
    np.testing.assert_allclose(center, want_w, atol=1e-5)
    np.testing.assert_allclose(context, want_c, atol=1e-5)
    np.testing.assert_allclose(report.loss_curve, want_loss, atol=1e-5)
    assert report.pairs == 9 and report.examples == 2


def test_bad_inputs_are_named():
    center, context = init_vectors(5, 4, np.random.default_rng(0))
    config = SGNSConfig(dim=4, threads=1)
    batch = {"center": np.array([1], np.int32), "contexts_negatives": np.array([[2, 9]], np.int32),
             "mask": np.ones((1, 2), np.uint8), "label": np.array([[1, 0]], np.uint8)}
    with pytest.raises(PipelineError, match="contexts_negatives.*vocabulary has 5"):
        train([batch], center, context, config)
    with pytest.raises(PipelineError, match="one-shot iterator"):
        train(iter([batch]), center, context, config)
    with pytest.raises(PipelineError, match="center_vecs"):
        train([batch], center.astype(np.float64), context, config)
    with pytest.raises(PipelineError, match="SGNSConfig.min_lr"):
        SGNSConfig(lr=0.01, min_lr=0.1)


# -- documents with per-epoch draws (SkipGramConfig.draws "epoch") ------------------------

@pytest.fixture(scope="module")
def lee_docs(lee):
    """(word -> id, counts (V,) int64, {"ids", "offsets"}) for the same lee words, as documents."""
    index, freq, _ = lee
    sentences = [simple_preprocess(line, max_len=15) for line in LEE.read_text(encoding="utf-8").splitlines()]
    docs = [[index[w] for w in s if w in index] for s in sentences]
    offsets = np.r_[0, np.cumsum([len(d) for d in docs])].astype(np.int64)
    ids = np.array([i for d in docs for i in d], np.int32)
    return index, freq.astype(np.int64), {"ids": ids, "offsets": offsets}


@pytest.mark.parametrize("update", ["row", "pair"])
def test_documents_train_with_draws_per_epoch(lee_docs, update):
    index, counts, docs = lee_docs
    config = SGNSConfig(dim=50, epochs=5, batch_size=2000, threads=1, update=update)
    center, context = init_vectors(len(counts), config.dim, np.random.default_rng(0))
    report = train([docs], center, context, config, draws=EpochDraws.of(counts, SkipGramConfig(), seed=0))
    assert report.loss_curve[0] == pytest.approx(np.log(2), abs=0.02)    # zero context table: dot 0 at first
    assert report.loss_curve[-1] < report.loss_curve[0] - 0.2
    assert report.words == 5 * len(docs["ids"])
    assert report.examples == 5 * (len(docs["ids"]) - int((np.diff(docs["offsets"]) == 1).sum()))
    assert 6 * 6 * report.examples > report.pairs > 6 * 5 * report.examples   # (1 + K) × E[2w] = 6 × 6 less the edges
    for related, unrelated in [(("israeli", "palestinian"), ("israeli", "cricket")),
                               (("bin", "laden"), ("bin", "cricket"))]:
        assert cosine(center, index, *related) > cosine(center, index, *unrelated) + 0.3


def test_draws_reproducible_for_a_seed_with_one_thread(lee_docs):
    _, counts, docs = lee_docs
    config = SGNSConfig(dim=16, epochs=2, batch_size=3000, threads=1)
    runs = []
    for seed in (3, 3, 4):
        center, context = init_vectors(len(counts), config.dim, np.random.default_rng(5))
        draws = EpochDraws.of(counts, SkipGramConfig(subsample=1e-3, subsample_formula="gensim"), seed=seed)
        report = train([docs], center, context, config, draws=draws)
        runs.append((center, report.examples))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0], runs[2][0])                     # another seed, other draws
    assert runs[0][1] < 2 * len(docs["ids"])                              # subsampling thinned the centers


def torch_reference(center, context, rows, lr, update):
    """Per row (row) or per (context, its negatives) of each row (pair): autograd of the
    summed BCE-with-logits and one SGD step, in float64."""
    steps = []
    for c, cn, nc, K in rows:
        if update == "row":
            steps.append((c, cn, [1] * nc + [0] * (nc * K)))
        else:
            steps += [(c, [cn[k], *cn[nc + k * K:nc + (k + 1) * K]], [1] + [0] * K) for k in range(nc)]
    return torch_sgd_steps(center, context, [(c, cn, [1] * len(cn), label) for c, cn, label in steps], lr,
                           np.ones(len(center)))


@pytest.mark.parametrize("draws", ["epoch", "stored"])
@pytest.mark.parametrize("update", ["row", "pair"])
def test_drawn_rows_train_as_the_autograd_step(update, draws):
    """The kernel trains exactly the rows draw() shows for the same seed (or the stored rows), by
    the autograd step per row or per pair; 2 is repeated so that later steps see earlier updates."""
    rng = np.random.default_rng(3)
    counts = np.r_[0, rng.integers(1, 50, 6)]
    docs = {"ids": np.array([1, 2, 3, 2, 4, 5, 6, 1, 2], np.int32), "offsets": np.array([0, 5, 9])}
    skipgram = SkipGramConfig(max_window=2, negatives=2)
    draws_ = EpochDraws.of(counts, skipgram, seed=11)
    if draws == "epoch":
        centers, _, cn, contexts = draws_.draw(docs["ids"], docs["offsets"], epoch=0, batch=0)
        batches = [docs]
    else:
        stored = make_examples(docs["ids"], docs["offsets"], counts, skipgram, np.random.default_rng(0))
        centers, cn, contexts, batches, draws_ = (stored["center"], stored["contexts_negatives"],
                                                  stored["label"].sum(1), [stored], None)
    rows = [(int(c), row[:k * 3].tolist(), int(k), 2) for c, row, k in zip(centers, cn, contexts)]
    center, context = rng.normal(0, 0.7, (2, 7, 4)).astype(np.float32)
    want_w, want_c, _ = torch_reference(center, context, rows, 0.5, update)
    config = SGNSConfig(dim=4, epochs=1, lr=0.5, min_lr=0.5, threads=1, update=update)
    report = train(batches, center, context, config, draws=draws_)
    np.testing.assert_allclose(center, want_w, atol=1e-5)
    np.testing.assert_allclose(context, want_c, atol=1e-5)
    assert report.examples == len(rows) and report.pairs == sum(k * 3 for _, _, k, _ in rows)


def test_pair_updates_need_make_examples_layout(lee):
    _, freq, examples = lee                       # window slots with gaps: not make_examples' layout
    center, context = init_vectors(len(freq), 8, np.random.default_rng(0))
    with pytest.raises(PipelineError, match="layout"):
        train([examples], center, context, SGNSConfig(dim=8, update="pair", threads=1))

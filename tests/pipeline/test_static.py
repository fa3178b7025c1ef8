import json

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from gensim.models import KeyedVectors
from gensim.test.utils import datapath

from embcache.pipeline.errors import PipelineError
from embcache.pipeline.static import (FORMAT_VERSION, PartialEmbedding, StaticConfig, build_model, build_vocab, pad_ids,
                             predict_proba, static_from_bytes, static_to_bytes, train_static, trainable_rows)
from embcache.pipeline.vectors import (PAD, UNK, StaticVocab, detect_format, initial_matrix, load_vectors,
                              vectors_digest)

H = 16
FILLERS = [f"w{i}" for i in range(40)]                 # pretrained, no signal
SIGNAL = [[f"pos{i}" for i in range(5)], [f"neg{i}" for i in range(5)]]   # pretrained, by class
OOV_SIGNAL = [[f"xpos{i}" for i in range(4)], [f"xneg{i}" for i in range(4)]]  # not pretrained
FAST = dict(threads=1, batch_size=32, epochs=12, patience=None, lr=0.01)


def pretrained(seed: int = 0) -> tuple[list[str], np.ndarray]:
    """FILLERS + SIGNAL words (class words shifted ±3 along dim 0, as topic words cluster) + unused words."""
    rng = np.random.default_rng(seed)
    words = FILLERS + SIGNAL[0] + SIGNAL[1] + [f"unused{i}" for i in range(20)]
    vectors = rng.standard_normal((len(words), H)).astype(np.float32)
    vectors[len(FILLERS):len(FILLERS) + 5, 0] += 3.0
    vectors[len(FILLERS) + 5:len(FILLERS) + 10, 0] -= 3.0
    return words, vectors


def documents(n: int, signal: list[list[str]], seed: int) -> tuple[list[list[str]], np.ndarray]:
    """n documents of 5-14 filler words + 3 words of their class (label) at random places."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    docs = []
    for y in labels:
        doc = list(rng.choice(FILLERS, rng.integers(5, 15))) + list(rng.choice(signal[y], 3))
        docs.append([str(doc[i]) for i in rng.permutation(len(doc))])
    return docs, labels


@pytest.fixture(scope="module")
def task():
    """Train/val/test splits where the label is carried by OOV words (xpos*/xneg*)."""
    words, vectors = pretrained()
    return words, vectors, [documents(n, OOV_SIGNAL, seed) for n, seed in ((300, 1), (100, 2), (200, 3))]


def trained(task, **overrides):
    words, vectors, ((train, y), (val, yv), _) = task
    config = StaticConfig(**{**FAST, **overrides})
    vocab = build_vocab(train, words, config)
    model = build_model(vocab, words, vectors, 2, config)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    history = train_static(model, vocab.encode(train, config.max_tokens), y,
                           vocab.encode(val, config.max_tokens), yv, config)
    return model, vocab, config, start, history


def accuracy(model, vocab, config, docs, labels) -> float:
    return float((predict_proba(model, vocab.encode(docs, config.max_tokens)).argmax(1) == labels).mean())


# --- loading vectors ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vector_files(tmp_path_factory):
    words, vectors = pretrained()
    kv = KeyedVectors(H)
    kv.add_vectors(words, vectors)
    d = tmp_path_factory.mktemp("vectors")
    kv.save_word2vec_format(str(d / "w2v.txt"))
    kv.save_word2vec_format(str(d / "w2v.bin"), binary=True)
    kv.save_word2vec_format(str(d / "ft.vec"))
    kv.save_word2vec_format(str(d / "glove.txt"), write_header=False)
    return d, words, vectors


@pytest.mark.parametrize("name,fmt", [("w2v.txt", "word2vec"), ("w2v.bin", "word2vec-binary"),
                                      ("ft.vec", "word2vec"), ("glove.txt", "glove")])
def test_load_vectors_detects_format_and_round_trips(vector_files, name, fmt):
    d, words, vectors = vector_files
    assert detect_format(d / name) == fmt
    for format in ("auto", "fasttext" if name == "ft.vec" else fmt):
        got_words, got = load_vectors(d / name, format)
        assert got_words == words and got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, vectors)            # text keeps float32 repr: exact
    got_words, got = load_vectors(d / name, limit=7)
    assert got_words == words[:7] and got.shape == (7, H)


def test_load_vectors_gensim_test_files():
    words, vectors = load_vectors(datapath("lee_fasttext.vec"))
    assert vectors.shape == (1762, 10) and len(words) == 1762
    words, vectors = load_vectors(datapath("test_glove.txt"))
    assert detect_format(datapath("test_glove.txt")) == "glove" and vectors.shape == (76, 50)
    assert words[0] == "the"


def test_load_vectors_errors_name_the_file(vector_files, tmp_path):
    d = vector_files[0]
    with pytest.raises(PipelineError, match="glove-6b-300d.*no such vectors file"):
        load_vectors("glove-6b-300d")
    (tmp_path / "ragged.txt").write_text("a 1 2 3\nb 1 2\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "nan.txt").write_text("a 1 2\nb nan 2\n")
    for path, pattern in [(tmp_path / "ragged.txt", "ragged.txt: cannot read as glove"),
                          (tmp_path / "empty.txt", "empty.txt: empty file"),
                          (tmp_path / "nan.txt", r"nan.txt:1: non-finite value in the vector of 'b'"),
                          (d / "w2v.bin", "w2v.bin: cannot read as glove")]:
        with pytest.raises(PipelineError, match=pattern):
            load_vectors(path, "glove" if path.name == "w2v.bin" else "auto")
    with pytest.raises(PipelineError, match="format"):
        load_vectors(d / "w2v.txt", "text")
    with pytest.raises(PipelineError, match="limit"):
        load_vectors(d / "w2v.txt", limit=0)


def test_load_packaged_glove():
    words, vectors = load_vectors("glove-6b-50d")          # ~0.7 s here: not marked slow
    assert vectors.shape == (400_000, 50) and vectors.dtype == np.float32 and len(words) == 400_000
    assert words[:4] == ["the", ",", ".", "of"] and vectors[0, 0] == np.float32(0.418)
    small_words, small = load_vectors("glove-6b-50d", limit=1000)
    assert small_words == words[:1000] and np.array_equal(small, vectors[:1000])


def test_vectors_digest_tracks_words_and_values():
    words, vectors = pretrained()
    digest = vectors_digest(words, vectors)
    assert digest == vectors_digest(list(words), vectors.copy())
    changed = vectors.copy()
    changed[3, 3] = np.nextafter(changed[3, 3], np.float32(9))
    assert len({digest, vectors_digest(words, changed), vectors_digest(words[::-1], vectors),
                vectors_digest(words[:-1], vectors[:-1])}) == 4


# --- the vocabulary ------------------------------------------------------------------------------

CORPUS = [["w1", "w2", "w2", "xpos0", "xpos0", "once", "<num>"], ["w2", "xneg0", "xneg0", "w3", "<pad>"]]


def test_vocab_rows_order_and_counts():
    words, _ = pretrained()
    vocab = StaticVocab.build(CORPUS, words, specials=("<num>",))
    assert vocab.words == (PAD, UNK, "<num>", "w2", "w1", "w3", "xneg0", "xpos0")
    assert vocab.pretrained.tolist() == [False, False, False, True, True, True, False, False]
    assert vocab.counts.tolist() == [0, 2, 1, 3, 1, 1, 2, 2]        # <unk>: "once" and "<pad>"
    assert [a.tolist() for a in vocab.encode(CORPUS + [[]], max_tokens=4)] == [[4, 3, 3, 7], [3, 6, 6, 5], []]
    assert vocab.lookup("nothing") == vocab.lookup(PAD) == 1
    assert len(StaticVocab.build(CORPUS, words, oov_min_count=1)) == len(vocab) + 1   # "once"
    assert StaticVocab.build(CORPUS, words, min_count=2).words[2:] == ("w2", "xneg0", "xpos0")
    everything = StaticVocab.build(CORPUS, words, keep_all_pretrained=True)
    assert everything.words[2:5] == ("w2", "w1", "w3")             # corpus words first,
    rest = [w for w in words if w not in ("w1", "w2", "w3")]
    assert list(everything.words[5:5 + len(rest)]) == rest          # then the file's order
    with pytest.raises(PipelineError, match="specials"):
        StaticVocab.build(CORPUS, words, specials=(UNK,))


def test_vocab_arrow_round_trip_and_version_check():
    vocab = StaticVocab.build(CORPUS, pretrained()[0], specials=("<num>", "<url>"), keep_all_pretrained=True)
    back = StaticVocab.from_arrow(vocab.to_arrow())
    assert back == vocab and back.words == vocab.words and back.specials == ("<num>", "<url>")
    assert back.keep_all_pretrained and np.array_equal(back.pretrained, vocab.pretrained)
    table = vocab.to_arrow()
    old = table.replace_schema_metadata({**{k.decode(): v.decode() for k, v in table.schema.metadata.items()},
                                         "format_version": "0"})
    with pytest.raises(PipelineError, match="version '0'; this code reads"):
        StaticVocab.from_arrow(old)
    with pytest.raises(PipelineError, match="not a static vocabulary"):
        StaticVocab.from_arrow(pa.table({"word": ["a"]}))


def test_initial_matrix_copies_pretrained_rows():
    words, vectors = pretrained()
    vocab = StaticVocab.build(CORPUS * 200, words, specials=("<num>",))
    matrix = initial_matrix(vocab, words, vectors, np.random.default_rng(0))
    assert matrix.shape == (len(vocab), H) and matrix.dtype == np.float32
    assert not matrix[0].any()
    for r in np.flatnonzero(vocab.pretrained):
        assert np.array_equal(matrix[r], vectors[words.index(vocab.words[r])])
    random = matrix[~vocab.pretrained][1:]                              # <unk>, <num>, OOV rows
    assert 0.5 < random.std() / vectors.std() < 1.5
    assert np.array_equal(matrix, initial_matrix(vocab, words, vectors, np.random.default_rng(0)))
    with pytest.raises(PipelineError, match="other vectors"):
        initial_matrix(vocab, words[2:], vectors[2:], np.random.default_rng(0))   # no "w2"


# --- which rows train ----------------------------------------------------------------------------

def test_trainable_selection_picks_expected_words():
    vocab = StaticVocab.build(CORPUS, pretrained()[0], specials=("<num>",))
    picked = {mode: {vocab.words[r] for r in trainable_rows(vocab, mode)}
              for mode in ("oov", "special", "all", "none")}
    assert picked == {"oov": {UNK, "<num>", "xneg0", "xpos0"}, "special": {UNK, "<num>"},
                      "all": set(vocab.words) - {PAD}, "none": set()}


def test_partial_embedding_forward_and_weight():
    matrix = torch.randn(6, 4)
    matrix[0] = 0
    emb = PartialEmbedding(matrix, np.array([4, 2]))
    assert emb.trainable.shape == (2, 4) and emb.slot.tolist() == [-1, -1, 0, -1, 1, -1]
    with torch.no_grad():
        emb.trainable += 1.0
    ids = torch.tensor([[1, 2, 4, 0]])
    expected = matrix.clone()
    expected[[2, 4]] += 1.0
    assert torch.equal(emb(ids), expected[ids]) and torch.equal(emb.weight(), expected)
    weights = torch.tensor([[0.5, 0.25, 2.0, 9.0]])
    torch.testing.assert_close(emb.bag(ids, weights), (weights.T * expected[ids[0]]).sum(0, keepdim=True))
    emb(torch.tensor([[4, 2, 4]])).sum().backward()                    # gradient: once per occurrence
    assert emb.trainable.grad.tolist() == [[1.0] * 4, [2.0] * 4]
    assert [name for name, _ in emb.named_parameters()] == ["trainable"]
    with pytest.raises(PipelineError):
        PartialEmbedding(matrix, np.array([0, 2]))                      # <pad> never trains


def test_pad_ids_left_aligns_ragged_documents():
    docs = [np.array([3, 4, 5], np.int32), np.array([], np.int32), np.array([7], np.int64)]
    padded = pad_ids(docs)
    assert padded.dtype == torch.long and padded.tolist() == [[3, 4, 5], [0, 0, 0], [7, 0, 0]]
    assert pad_ids([]).shape == (0, 1) and pad_ids([docs[1]]).tolist() == [[0]]


@pytest.mark.parametrize("trainable", ["oov", "all", "none"])
def test_mean_encoder_matches_naive_mean_and_its_gradient(task, trainable):
    """PartialEmbedding.bag's mean == each document's mean of its rows, pads left out; same gradient."""
    words, vectors, ((train, _), _, _) = task
    config = StaticConfig(**{**FAST, "trainable": trainable})
    vocab = build_vocab(train, words, config)
    model = build_model(vocab, words, vectors, 2, config).eval()
    emb = model.embedding
    if emb.trainable is not None:
        with torch.no_grad():
            emb.trainable.add_(torch.randn(emb.trainable.shape, generator=torch.Generator().manual_seed(1)))
    docs = vocab.encode(train[:24])                                     # 8-17 words: ragged, padded
    fast = model(pad_ids(docs))
    rows = torch.nonzero(emb.slot >= 0).flatten()                       # the rows of emb.trainable
    full = emb.frozen if emb.trainable is None else emb.frozen.index_copy(0, rows, emb.trainable)
    naive = model.out(torch.stack([full[torch.from_numpy(a).long()].mean(0) for a in docs]))
    torch.testing.assert_close(fast, naive, rtol=0, atol=1e-5)
    if emb.trainable is not None:
        grad_fast, = torch.autograd.grad(fast.square().sum(), emb.trainable)
        grad_naive, = torch.autograd.grad(naive.square().sum(), emb.trainable)
        torch.testing.assert_close(grad_fast, grad_naive, rtol=0, atol=1e-5)
        assert grad_fast.any()                                          # the gradient does reach them


def test_frozen_rows_bit_identical_with_weight_decay(task):
    model, vocab, _, start, _ = trained(task, trainable="oov", weight_decay=0.1, epochs=4)
    before = start["embedding.frozen"].numpy()
    after = model.embedding.weight().numpy()
    frozen = vocab.pretrained | (np.arange(len(vocab)) == 0)
    assert after[frozen].tobytes() == before[frozen].tobytes()
    assert torch.equal(model.embedding.frozen, start["embedding.frozen"])
    assert (after[~frozen] != before[~frozen]).any(axis=1).all()       # every trainable row moved
    assert not after[0].any()


def test_optimizer_state_has_k_rows_and_skips_frozen(task):
    words, vectors, ((train, y), _, _) = task
    config = StaticConfig(**FAST)
    vocab = build_vocab(train, words, config)
    model = build_model(vocab, words, vectors, 2, config)
    k = len(trainable_rows(vocab, "oov"))
    frozen_before = model.embedding.frozen.clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    ids, labels = pad_ids(vocab.encode(train[:64])), torch.from_numpy(y[:64])
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(ids), labels).backward()
        optimizer.step()
    state = optimizer.state[model.embedding.trainable]
    assert state["exp_avg"].shape == state["exp_avg_sq"].shape == (k, H) and k < len(vocab)
    assert not any(p is model.embedding.frozen for g in optimizer.param_groups for p in g["params"])
    assert not model.embedding.frozen.requires_grad
    assert torch.equal(model.embedding.frozen, frozen_before)


def test_trainable_all_moves_pretrained_rows(task):
    model, vocab, _, start, _ = trained(task, trainable="all", epochs=2)
    moved = (model.embedding.weight() != start["embedding.frozen"]).any(1).numpy()
    assert moved[vocab.pretrained].all() and not moved[0]
    assert model.embedding.trainable.shape == (len(vocab) - 1, H)


def test_trainable_none_has_no_embedding_parameters_and_learns_from_pretrained():
    words, vectors = pretrained()
    (train, y), (test, yt) = documents(300, SIGNAL, 4), documents(200, SIGNAL, 5)
    config = StaticConfig(trainable="none", **FAST)
    vocab = build_vocab(train, words, config)
    model = build_model(vocab, words, vectors, 2, config)
    assert model.embedding.trainable is None and list(model.embedding.parameters()) == []
    frozen = model.embedding.frozen.clone()
    train_static(model, vocab.encode(train), y, None, None, config)
    assert torch.equal(model.embedding.weight(), frozen)
    assert accuracy(model, vocab, config, test, yt) >= 0.95


# --- training ------------------------------------------------------------------------------------

def test_mean_classifier_learns_from_oov_words(task):
    model, vocab, config, _, history = trained(task)
    test, yt = task[2][2]
    assert accuracy(model, vocab, config, test, yt) >= 0.95
    assert history.train_loss[-1] < history.train_loss[0] and max(history.val_accuracy) >= 0.95
    assert len(history.val_loss) == config.epochs and history.seconds > 0


def test_cnn_classifier_trains(task):
    model, vocab, config, _, history = trained(task, encoder="cnn", cnn_filters=8, kernel_sizes=(2, 3))
    test, yt = task[2][2]
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert accuracy(model, vocab, config, test, yt) >= 0.9


@pytest.mark.parametrize("encoder", ["mean", "cnn"])
def test_padding_row_zero_and_masked(task, encoder):
    model, vocab, config, _, _ = trained(task, encoder=encoder, trainable="all", epochs=2, cnn_filters=4)
    assert not model.embedding.weight()[0].any() and model.embedding.slot[0] == -1
    docs = task[2][2][0]
    short, tiny, long = vocab.encode([docs[0][:6], docs[1][:1], docs[2] * 5])
    with torch.no_grad():
        alone = torch.cat([model(pad_ids([short])), model(pad_ids([tiny]))])
        batched = model(pad_ids([short, tiny, long]))[:2]                 # padded to len(long)
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


def test_early_stopping_keeps_best_epoch(task):
    _, (val, yv), _ = task[2]
    model, vocab, config, _, history = trained(task, lr=0.05, epochs=15, patience=2)
    best = history.best_epoch
    assert history.val_loss[best] == min(history.val_loss)
    assert len(history.val_loss) == config.epochs or len(history.val_loss) == best + 1 + config.patience
    proba = predict_proba(model, vocab.encode(val))
    loss = F.nll_loss(torch.log(torch.from_numpy(proba)), torch.from_numpy(yv)).item()
    assert loss == pytest.approx(history.val_loss[best], abs=1e-5)


@pytest.mark.parametrize("encoder", ["mean", "cnn"])
def test_same_seed_same_model(task, encoder):
    a, vocab, config, _, ha = trained(task, encoder=encoder, cnn_filters=4, epochs=3)
    b, _, _, _, hb = trained(task, encoder=encoder, cnn_filters=4, epochs=3)
    c, _, _, _, hc = trained(task, encoder=encoder, cnn_filters=4, epochs=3, seed=1)
    assert ha.train_loss == hb.train_loss and ha.val_loss == hb.val_loss and ha.train_loss != hc.train_loss
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ids = vocab.encode(task[2][2][0])
    assert np.array_equal(predict_proba(a, ids), predict_proba(b, ids))


def test_config_rejects_bad_values():
    for bad in [{"trainable": "some"}, {"encoder": "rnn"}, {"dropout": 1.0}, {"kernel_sizes": ()},
                {"patience": 0}, {"max_tokens": 0}, {"lr": 0}, {"specials": ("",)}]:
        with pytest.raises(PipelineError, match=next(iter(bad))):
            StaticConfig(**bad)


def test_train_rejects_bad_labels(task):
    words, vectors, ((train, y), _, _) = task
    config = StaticConfig(**FAST)
    vocab = build_vocab(train, words, config)
    model = build_model(vocab, words, vectors, 2, config)
    with pytest.raises(PipelineError, match="y_train"):
        train_static(model, vocab.encode(train), y + 1, None, None, config)


# --- saving --------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder", ["mean", "cnn"])
def test_bytes_round_trip_predicts_identically(task, encoder):
    model, vocab, config, _, _ = trained(task, encoder=encoder, epochs=2, cnn_filters=4, specials=("<num>",))
    files = static_to_bytes(model, vocab, {"labels": ["neg", "pos"]})
    assert sorted(files) == ["model.safetensors", "static.json", "vocab.arrow"]
    header = json.loads(files["static.json"])
    assert header["format"] == "embcache.static" and header["format_version"] == FORMAT_VERSION == 1
    assert header["vectors_digest"] == vectors_digest(*task[:2])
    back, back_vocab, meta = static_from_bytes(files)
    assert meta == {"labels": ["neg", "pos"]} and back_vocab == vocab and back.config == config
    assert back.vectors_digest == model.vectors_digest and not back.training
    ids = vocab.encode(task[2][2][0])
    assert np.array_equal(predict_proba(back, ids), predict_proba(model, ids))
    assert torch.equal(back.embedding.weight(), model.embedding.weight())
    assert back.embedding.trainable.shape == model.embedding.trainable.shape


def test_from_bytes_checks_format(task):
    model, vocab, _, _, _ = trained(task, epochs=1)
    files = static_to_bytes(model, vocab, {})
    header = json.loads(files["static.json"])
    for change, pattern in [({"format_version": 2}, "version 2; this code reads 'embcache.static' version 1"),
                            ({"format": "pickle"}, "not a static classifier")]:
        with pytest.raises(PipelineError, match=pattern):
            static_from_bytes({**files, "static.json": json.dumps({**header, **change}).encode()})
    with pytest.raises(PipelineError, match="missing files"):
        static_from_bytes({"static.json": files["static.json"]})
    with pytest.raises(PipelineError, match="meta"):
        static_to_bytes(model, vocab, {"x": object()})


"""Skip-gram negative sampling: cached documents (or stored rows) in, trained vectors out.

The objective is word2vec's: for each center and each of its contexts and negatives, the
sigmoid binary cross-entropy of dot(center[c], context[w]) against the label (1 = context
word, 0 = negative). Trained by plain SGD with the learning rate falling linearly from
`lr` to `min_lr` over all the rows of all epochs, one step per center row (`update="row"`:
exactly the autograd SGD step on the row's summed loss, all gradients taken at the row's
starting values) or one per (center, context) pair (`update="pair"`: gensim's and
word2vec.c's order); tests/pipeline/test_sgns.py checks both against torch. lr means what
gensim's alpha means.

Two kinds of batches (pipeline/skipgram.py, SkipGramConfig.draws):
  documents {"ids" (T,), "offsets" (D+1,)} with `draws=EpochDraws`: the kernel draws each
    epoch's subsampling, windows and negatives itself, from a stream seeded by (draws.seed,
    epoch, batch index), so a run is reproducible for a seed (with threads=1: Hogwild
    threads race on shared rows, as in gensim);
  stored rows {"center", "contexts_negatives", "mask", "label"} (make_examples, the d2l recipe).

>>> center, context = init_vectors(V, 100, np.random.default_rng(0))
>>> report = train(lambda epoch: [{"ids": ids, "offsets": offsets}], center, context, SGNSConfig(epochs=5),
...                draws=EpochDraws.of(counts, SkipGramConfig(), seed=0))
>>> report.loss_curve[0] > report.loss_curve[-1]       # both tables updated in place
True

Implementation: numba kernels (pipeline/sgns_kernels.py) run the per-row dot / axpy loops in
float32 with no BLAS calls, and `threads` Python threads run them on different batches at
once without locks (Hogwild, as gensim and the original word2vec do). Chosen because
autograd + Adam on the same rows is 6-10x behind gensim here (ASSETS.md): the work per
pair is a 100-float dot and two axpys, so any per-batch framework overhead or
gather/scatter copy costs more than the arithmetic. Speed against gensim is measured by
benchmarks/word2vec.py (in memory) and benchmarks/word2vec_flow.py (through the store).

Compiled code is cached on disk (`cache=True`): numba uses $NUMBA_CACHE_DIR if set, else
`__pycache__` beside this file, else ~/.cache/numba, whichever it can write. Where none is
writable the kernels compile in memory once per process instead (a few seconds); results
are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .cores import available_cores
from .errors import PipelineError
from .configs import SGNSConfig  # noqa: F401  (defined once, in configs.py)
from .skipgram import EpochDraws, SkipGramConfig, make_examples
from .sgns_kernels import _sgd_rows, _sgd_sequences

Batch = dict[str, np.ndarray]  # ids (T,), offsets (D+1,); or center (N,), contexts_negatives, mask, label (N, L)
INIT_SCALE = {"gensim": 1.0, "word2vec_c": 0.5}  # center rows start uniform in ±scale/dim


@dataclass
class TrainReport:
    # mean BCE per entry, one per batch, estimated on every 8th center (sgns_kernels.LOSS_EVERY)
    loss_curve: list[float] = field(default_factory=list)
    examples: int = 0           # centers trained, all epochs: gensim's "effective words"
    pairs: int = 0              # entries trained (contexts + negatives): dot + update pairs
    words: int = 0              # corpus tokens read, all epochs (documents); = examples for stored rows
    seconds: float = 0.0        # wall time of train, reading the batches included
    pairs_per_s: float = 0.0
    examples_per_s: float = 0.0


def init_vectors(vocab_size: int, dim: int, rng: np.random.Generator,
                 init: Literal["gensim", "word2vec_c"] = "gensim") -> tuple[np.ndarray, np.ndarray]:
    """(center, context) tables, each (V, dim) float32: center uniform(±scale/dim), context 0.

    >>> c, x = init_vectors(4, 2, np.random.default_rng(0))
    >>> c.shape, bool((abs(c) <= 0.5).all()), bool((x == 0).all())
    ((4, 2), True, True)
    """
    if init not in INIT_SCALE:
        raise PipelineError("init_vectors.init", f"invalid value {init!r}")
    center = rng.random((vocab_size, dim), dtype=np.float32)                  # [0, 1)
    center = (center * np.float32(2.0) - np.float32(1.0)) * np.float32(INIT_SCALE[init] / dim)
    return center, np.zeros((vocab_size, dim), dtype=np.float32)


def train(batches: Callable[[int], Iterable[Batch]] | Iterable[Batch], center_vecs: np.ndarray,
          context_vecs: np.ndarray, config: SGNSConfig, trainable_rows: np.ndarray | None = None,
          total_examples: int | None = None, draws: EpochDraws | None = None) -> TrainReport:
    """SGD on the sigmoid BCE; updates both (V, H) float32 tables in place.

    batches: `batches(epoch)` -> that epoch's batches (the same cached shards every epoch,
      or fresh ones per epoch), or a re-iterable such as a list, read once per epoch. A
      one-shot iterator is refused. Documents with `draws`, stored rows without.
    config.update "pair" on stored rows needs make_examples' layout (PipelineError otherwise).
    trainable_rows: ids whose rows, in both tables, train at the full lr; all other rows
      train at lr * config.other_rows_lr_scale (0.0: bit-identical). None: all rows train.
    total_examples: per epoch, tokens (documents) or rows (stored rows), for the lr schedule;
      None counts them in an extra pass.
    A malformed batch raises PipelineError when reached; the batches before it have trained.
    """
    _check_tables(center_vecs, context_vecs, config)
    per_epoch = batches if callable(batches) else _reiterable(batches)
    pieces = _documents if draws is not None else _chunks
    per_pair = config.update == "pair"
    start = time.perf_counter()
    if total_examples is None:
        total_examples = sum(_size(b) for b in per_epoch(0))
    scale = _row_scale(len(center_vecs), trainable_rows, config.other_rows_lr_scale)   # (V,)
    total_rows = max(total_examples * config.epochs, 1)
    threads = config.threads or available_cores()
    done, results = 0, []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        in_flight: list[Future] = []
        for epoch in range(config.epochs):
            for n, chunk in enumerate(pieces(per_epoch(epoch), config.batch_size, len(center_vecs))):
                lr = np.float32(config.lr - (config.lr - config.min_lr) * min(done / total_rows, 1.0))
                if draws is None:
                    in_flight.append(pool.submit(_rows_job, chunk, center_vecs, context_vecs, scale, lr, per_pair))
                else:
                    in_flight.append(pool.submit(_sgd_sequences, *chunk, center_vecs, context_vecs, scale, lr,
                                                 *draws.kernel_args(), per_pair, draws.batch_seed(epoch, n)))
                done += len(chunk[0])
                if len(in_flight) >= 2 * threads:                   # bounded read-ahead
                    results.append(in_flight.pop(0).result())
        results += [f.result() for f in in_flight]
    seconds = time.perf_counter() - start
    pairs = int(sum(r[2] for r in results))
    centers = int(sum(r[3] for r in results))
    return TrainReport(loss_curve=[r[0] / r[1] for r in results if r[1]], examples=centers, pairs=pairs,
                       words=done, seconds=seconds, pairs_per_s=pairs / seconds, examples_per_s=centers / seconds)


def warm_up(documents: bool = True) -> None:
    """Load (or compile) the kernel train() will call, on a toy input: a process's first numba
    call also initializes numba itself (~1 s), which a caller can overlap with its reading."""
    counts = np.array([0, 3, 2, 1], np.int64)
    docs = {"ids": np.array([1, 2, 3, 1], np.int32), "offsets": np.array([0, 4], np.int64)}
    center, context = init_vectors(len(counts), 2, np.random.default_rng(0))
    config = SGNSConfig(dim=2, epochs=1, threads=1)            # row and pair: the same compiled kernel
    if documents:
        train([docs], center, context, config, draws=EpochDraws.of(counts, SkipGramConfig(max_window=1), 0))
    else:
        rows = make_examples(docs["ids"], docs["offsets"], counts, SkipGramConfig(max_window=1),
                             np.random.default_rng(0))
        train([rows], center, context, config)


def _rows_job(chunk, center_vecs, context_vecs, scale, lr, per_pair) -> tuple[float, int, int, int]:
    """(loss sum, entries in it, entries trained, rows trained) of one chunk of stored rows."""
    center, cn, mask, label = chunk
    negatives = _pair_layout(mask, label) if per_pair else 0
    loss, measured, pairs = _sgd_rows(center, cn, mask, label, center_vecs, context_vecs, scale, lr, per_pair,
                                      negatives)
    return loss, measured, pairs, len(center)


def _pair_layout(mask: np.ndarray, label: np.ndarray) -> int:
    """K, when every row is in make_examples' layout (c contexts, then K negatives each, then
    padding: mask and label prefixes, mask = c(1 + K)) with one K; pair updates need it."""
    m, c = mask.sum(1, dtype=np.int64), label.sum(1, dtype=np.int64)                 # (N,)
    cols = np.arange(mask.shape[1])
    used = c > 0
    k = np.unique((m[used] - c[used]) // c[used])
    if len(k) > 1 or (m[used] != c[used] * (1 + k[:1])).any() or (m[~used] != 0).any() \
            or not np.array_equal(mask.astype(bool), cols < m[:, None]) \
            or not np.array_equal(label.astype(bool), cols < c[:, None]):
        raise PipelineError("SGNSConfig.update", "'pair' needs rows in make_examples' layout (contexts, then "
                                                 "the same number of negatives per context); use 'row'")
    return int(k[0]) if len(k) else 0


def _size(batch: Batch) -> int:
    return len(batch["ids"]) if "ids" in batch else len(batch["center"])


def _documents(batches: Iterable[Batch], size: int, vocab_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, offsets from 0) of whole documents, about `size` tokens at a time (a longer document alone)."""
    for n, batch in enumerate(batches):
        ids, offsets = _check_documents(batch, n, vocab_size)
        d = 0
        while d < len(offsets) - 1:
            # the last document that still ends within `size` tokens of this piece's start, at least one
            end = max(int(np.searchsorted(offsets, offsets[d] + size, side="right")) - 1, d + 1)
            yield ids[offsets[d]:offsets[end]], offsets[d:end + 1] - offsets[d]
            d = end


def _check_documents(batch: Batch, n: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """ids int32 (T,) in [1, V), offsets int64 (D+1,) rising from 0 to T."""
    if "ids" not in batch or "offsets" not in batch:
        raise PipelineError(f"batches[{n}]", f"documents need arrays ids and offsets, got {sorted(batch)}")
    ids = np.ascontiguousarray(batch["ids"], dtype=np.int32).reshape(-1)
    offsets = np.ascontiguousarray(batch["offsets"], dtype=np.int64).reshape(-1)
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(ids) or (np.diff(offsets) < 0).any():
        raise PipelineError(f"batches[{n}].offsets", f"must rise from 0 to len(ids)={len(ids)}")
    if ids.size and (ids.min() < 1 or ids.max() >= vocab_size):
        raise PipelineError(f"batches[{n}].ids", f"ids span [{ids.min()}, {ids.max()}], must lie in [1, "
                                                 f"{vocab_size}) (<unk> = 0 is dropped before training)")
    return ids, offsets


def _chunks(batches: Iterable[Batch], size: int, vocab_size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """(center, cn, mask, label) slices of at most `size` rows, checked and kernel-typed."""
    for n, batch in enumerate(batches):
        center, cn, mask, label = _check_batch(batch, n, vocab_size)
        for s in range(0, len(center), size):
            yield center[s:s + size], cn[s:s + size], mask[s:s + size], label[s:s + size]


def _check_batch(batch: Batch, n: int, vocab_size: int) -> tuple[np.ndarray, ...]:
    """Contract arrays as C-contiguous int32/uint8; ids in [0, V) (the kernel does not bound-check)."""
    missing = {"center", "contexts_negatives", "mask", "label"} - set(batch)
    if missing:
        raise PipelineError(f"batches[{n}]", f"missing arrays {sorted(missing)}")
    center = np.ascontiguousarray(batch["center"], dtype=np.int32)                 # (N,)
    cn = np.ascontiguousarray(batch["contexts_negatives"], dtype=np.int32)         # (N, L)
    mask = np.ascontiguousarray(batch["mask"], dtype=np.uint8)                     # (N, L)
    label = np.ascontiguousarray(batch["label"], dtype=np.uint8)                   # (N, L)
    if center.ndim != 1 or cn.ndim != 2 or cn.shape[0] != len(center) \
            or mask.shape != cn.shape or label.shape != cn.shape:
        raise PipelineError(f"batches[{n}]", f"shapes center {center.shape}, contexts_negatives "
                                             f"{cn.shape}, mask {mask.shape}, label {label.shape}")
    for name, ids in (("center", center), ("contexts_negatives", cn)):
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise PipelineError(f"batches[{n}].{name}",
                                f"ids span [{ids.min()}, {ids.max()}], vocabulary has {vocab_size}")
    return center, cn, mask, label


def _check_tables(center_vecs: np.ndarray, context_vecs: np.ndarray, config: SGNSConfig) -> None:
    """Both tables (V, dim) float32 C-contiguous and writable: they are updated in place."""
    for name, t in (("center_vecs", center_vecs), ("context_vecs", context_vecs)):
        if not isinstance(t, np.ndarray) or t.dtype != np.float32 or t.ndim != 2 \
                or not t.flags.c_contiguous or not t.flags.writeable:
            raise PipelineError(name, "must be a writable C-contiguous float32 (V, dim) array")
        if t.shape != center_vecs.shape or t.shape[1] != config.dim:
            raise PipelineError(name, f"shape {t.shape}; expected {center_vecs.shape[0]} × {config.dim} "
                                      f"for both tables")


def _row_scale(vocab_size: int, trainable_rows: np.ndarray | None, other: float) -> np.ndarray:
    """(V,) float32 lr multiplier per row: 1 for trainable rows, `other` elsewhere."""
    if trainable_rows is None:
        return np.ones(vocab_size, dtype=np.float32)
    rows = np.asarray(trainable_rows).reshape(-1)
    if rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0 or rows.max() >= vocab_size):
        raise PipelineError("trainable_rows", f"must be integer ids in [0, {vocab_size})")
    scale = np.full(vocab_size, other, dtype=np.float32)
    scale[rows] = 1.0
    return scale


def _reiterable(batches: Iterable[Batch]) -> Callable[[int], Iterable[Batch]]:
    if iter(batches) is batches:
        raise PipelineError("batches", "a one-shot iterator cannot be read once per epoch; pass a "
                                       "list or a callable epoch -> batches")
    return lambda epoch: batches

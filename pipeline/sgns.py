"""Skip-gram negative sampling: precomputed (center, contexts+negatives) rows in, trained vectors out.

The objective is the d2l.ai word2vec recipe's: for each example row i and each real
entry j (mask 1), the sigmoid binary cross-entropy of dot(center[center_i], context[cn_ij])
against label_ij (1 = context word, 0 = negative). Rows are trained by plain SGD, one
row at a time, with the learning rate falling linearly from `lr` to `min_lr` over all
rows of all epochs. Each row's step is exactly the autograd SGD step on that row's
summed loss (all gradients taken at the row's starting values), which is gensim's
per-pair update rule; tests/pipeline/test_sgns.py checks it against torch. (d2l divides
a row's loss by its real entries because it uses Adam; with SGD the sum is what gives
gensim's step size, so lr means what gensim's alpha means.)

>>> center, context = init_vectors(V, 100, np.random.default_rng(0))
>>> report = train(lambda epoch: shards, center, context, SGNSConfig(epochs=5))
>>> report.loss_curve[0] > report.loss_curve[-1]       # both tables updated in place
True

Implementation: one numba kernel (`njit(nogil=True, fastmath=True, cache=True)`) runs the
per-row dot / axpy loops in float32 with no BLAS calls (LLVM vectorizes them), and
`threads` Python threads run it on different batches at once without locks (Hogwild,
as gensim and the original word2vec do). Chosen because autograd + Adam on the same
rows is 6-10x behind gensim here (ASSETS.md): the work per pair is a 100-float dot and
two axpys, so any per-batch framework overhead or gather/scatter copy costs more than
the arithmetic. Measured by benchmarks/word2vec.py (BBC + gensim's Wikipedia sample,
1.35 M tokens, 745 k effective words an epoch, 5 epochs, 2 threads, this 2-core machine,
interleaved in one process, best of 3):
  gensim Word2Vec(sg=1)   314 k words/s   ~11.2 M pair updates/s (estimated)
  embcache train          688 k centers/s  24.6 M pair updates/s   2.19x gensim
  + example precompute    275 k centers/s end to end (make_examples 460 k/s)  0.88x
  WordSim353 Spearman 0.292 vs gensim 0.277; analogies 1.76% vs 1.98% (means of 3).
One thread alone runs 16-18 M pair updates/s; gensim ~5.6 M per worker (11.2 M / 2).

Compiled code is cached on disk (`cache=True`): numba uses $NUMBA_CACHE_DIR if set, else
`__pycache__` beside this file, else ~/.cache/numba, whichever it can write. Where none is
writable the kernel compiles in memory once per process instead (about 2 s); results
are the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numba import njit

from .cores import available_cores
from .errors import PipelineError
from .configs import SGNSConfig  # noqa: F401  (defined once, in configs.py)

Batch = dict[str, np.ndarray]  # center (N,) int32; contexts_negatives, mask, label (N, L)
INIT_SCALE = {"gensim": 1.0, "word2vec_c": 0.5}  # center rows start uniform in ±scale/dim



@dataclass
class TrainReport:
    loss_curve: list[float] = field(default_factory=list)  # mean BCE per real entry, one per batch
    examples: int = 0           # rows (centers) trained, all epochs: gensim's "effective words"
    pairs: int = 0              # real (mask 1) entries trained: dot + update pairs
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
          total_examples: int | None = None) -> TrainReport:
    """SGD on the masked sigmoid BCE; updates both (V, H) float32 tables in place.

    batches: `batches(epoch)` -> that epoch's example dicts (the same cached shards every
      epoch, or fresh ones per epoch as gensim draws them), or a re-iterable such as a
      list, read once per epoch. A one-shot iterator is refused.
    trainable_rows: ids whose rows, in both tables, train at the full lr; all other rows
      train at lr * config.other_rows_lr_scale (0.0: bit-identical). None: all rows train.
    total_examples: rows per epoch, for the lr schedule; None counts them in an extra pass.
    A malformed batch raises PipelineError when reached; the batches before it have trained.
    """
    _check_tables(center_vecs, context_vecs, config)
    per_epoch = batches if callable(batches) else _reiterable(batches)
    start = time.perf_counter()
    if total_examples is None:
        total_examples = sum(len(b["center"]) for b in per_epoch(0))
    scale = _row_scale(len(center_vecs), trainable_rows, config.other_rows_lr_scale)   # (V,)
    total_rows = max(total_examples * config.epochs, 1)
    threads = config.threads or available_cores()
    done, results = 0, []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        in_flight: list[Future] = []
        for epoch in range(config.epochs):
            for chunk in _chunks(per_epoch(epoch), config.batch_size, len(center_vecs)):
                lr = config.lr - (config.lr - config.min_lr) * min(done / total_rows, 1.0)
                in_flight.append(pool.submit(_sgd_rows, *chunk, center_vecs, context_vecs, scale,
                                             np.float32(lr)))
                done += len(chunk[0])
                if len(in_flight) >= 2 * threads:                   # bounded read-ahead
                    results.append(in_flight.pop(0).result())
        results += [f.result() for f in in_flight]
    seconds = time.perf_counter() - start
    pairs = int(sum(n for _, n in results))
    return TrainReport(loss_curve=[loss / n for loss, n in results if n], examples=done, pairs=pairs,
                       seconds=seconds, pairs_per_s=pairs / seconds, examples_per_s=done / seconds)


def _kernel(fn):
    """njit(nogil, fastmath), cached on disk where numba finds a writable cache directory."""
    try:
        return njit(nogil=True, fastmath=True, cache=True)(fn)
    except RuntimeError:             # numba: "cannot cache function …: no locator available"
        return njit(nogil=True, fastmath=True)(fn)


@_kernel
def _sgd_rows(center, cn, mask, label, W, C, scale, lr):
    """One SGD step per row on sum_j mask_ij * BCE(sigmoid(W[c] . C[cn_ij]), label_ij).

    Every dot is taken at the row's starting values, then the center gradient is
    summed, then the context rows and the center row are updated: the autograd step,
    even when an id repeats within a row. Dots, sigmoids and updates run as separate
    loops so that independent dots and exps overlap in the CPU (22% faster here than
    one fused loop per entry). Returns (loss sum, real entries).
    """
    dim = W.shape[1]
    width = cn.shape[1]
    g = np.zeros(width, dtype=np.float32)             # (L,) t, then -lr * dloss/ddot
    neu1e = np.zeros(dim, dtype=np.float32)           # (H,) the center row's update
    loss = 0.0
    pairs = 0
    for i in range(center.shape[0]):
        c = center[i]
        wc = W[c]                                      # (H,) view: updates write through
        for j in range(width):
            if mask[i, j] == 0:
                continue
            cw = C[cn[i, j]]
            f = np.float32(0.0)
            for k in range(dim):
                f += wc[k] * cw[k]
            g[j] = -f if label[i, j] else f            # t: the entry's loss is softplus(t)
        for j in range(width):
            if mask[i, j] == 0:
                continue
            e = np.exp(min(g[j], np.float32(30.0)))    # float32 exp overflows past 88
            loss += np.log1p(e)
            p = e / (np.float32(1.0) + e)              # sigmoid(t) = dloss/dt
            g[j] = lr * p if label[i, j] else -lr * p
            pairs += 1
        neu1e[:] = 0.0
        for j in range(width):
            if mask[i, j] == 0:
                continue
            cw = C[cn[i, j]]
            gj = g[j]
            for k in range(dim):
                neu1e[k] += gj * cw[k]
        for j in range(width):
            if mask[i, j] == 0:
                continue
            w = cn[i, j]
            cw = C[w]
            gw = g[j] * scale[w]
            if gw != 0.0:                              # frozen rows are never written
                for k in range(dim):
                    cw[k] += gw * wc[k]
        sc = scale[c]
        if sc != 0.0:
            for k in range(dim):
                wc[k] += sc * neu1e[k]
    return loss, pairs


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

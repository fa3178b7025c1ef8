"""The numba kernels behind pipeline/sgns.py: SGD steps on skip-gram rows, and the per-epoch draws.

Two kinds of input, one update rule:
  _sgd_rows       stored rows (center, contexts+negatives, mask, label): the d2l recipe, where
                  the draws were made once at precompute (pipeline/skipgram.make_examples).
  _sgd_sequences  each document's word ids in order: the kernel draws, from a seeded stream,
                  what word2vec leaves to chance: which words subsampling keeps, each center's
                  window size (uniform in 1..W) and K negatives per context (∝ count**0.75, by
                  Walker's alias table, never the context word itself), in that order, document
                  by document. So a batch's draws depend only on its ids and its seed.
A center's contexts and negatives form one row, laid out as make_examples lays it out
(contexts c0..c(c-1), then K negatives per context: negatives k*K..k*K+K-1 belong to ck).
`row` trains it in one step (every dot at the row's starting values, _row_step: the
autograd SGD step on the row's summed loss); `pair` trains it context by context, each
context with its own K negatives, the center's vector moving after each pair (_pair_steps:
the autograd step per pair; gensim and word2vec.c update in this order too).

The random stream is splitmix64 (Steele et al. 2014): 64 bits a step, one state per batch,
seeded from (seed, epoch, batch) by numpy's SeedSequence in pipeline/sgns.py. `draw_rows`
runs the same draw code as the kernel and returns the rows instead of training on them,
so tests can check the draws themselves.
Every kernel is `njit(nogil=True, fastmath=True, cache=True)`: the per-row dot / axpy loops
run in float32 with no BLAS calls (LLVM vectorizes them), and threads run them at once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
TO_UNIT = 1.0 / 9007199254740992.0     # 2**-53: the top 53 bits of a draw as a float64 in [0, 1)
LOW32 = np.uint64(0xFFFFFFFF)
# The loss curve is an estimate from every LOSS_EVERY-th center of a batch (its first included):
#   log1p on every entry cost 10-16 % of the kernel's time (CPU time, BBC, 1 thread).
LOSS_EVERY = 8


def _kernel(fn):
    """njit(nogil, fastmath), cached on disk where numba finds a writable cache directory."""
    try:
        return njit(nogil=True, fastmath=True, cache=True)(fn)
    except RuntimeError:             # numba: "cannot cache function …: no locator available"
        return njit(nogil=True, fastmath=True)(fn)


def _inline(fn):
    try:
        return njit(nogil=True, fastmath=True, cache=True, inline="always")(fn)
    except RuntimeError:
        return njit(nogil=True, fastmath=True, inline="always")(fn)


@_inline
def _next(state):
    """splitmix64: advance state[0] and return 64 random bits (uint64)."""
    state[0] += GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@_inline
def _uniform(state):
    """A float64 uniform in [0, 1)."""
    return np.float64(_next(state) >> np.uint64(11)) * TO_UNIT


@_inline
def _below(bits32, n):
    """A uniform integer in [0, n) from 32 random bits, by multiply-shift (Lemire 2019): no division."""
    return np.int64((bits32 * np.uint64(n)) >> np.uint64(32))


@_inline
def _noise(state, accept, alias):
    """A word id ∝ the alias table's distribution: column uniform (the high 32 bits), kept if the
    low 32 bits fall below accept[col] (its keep probability × 2**32), else its alias."""
    r = _next(state)
    col = _below(r >> np.uint64(32), accept.shape[0])
    if (r & LOW32) < accept[col]:
        return np.int32(col)
    return alias[col]


@_inline
def _subsampled(ids, start, stop, keep, subsample, state, buf):
    """Copy ids[start:stop] into buf, each word kept w.p. keep[word] when subsample; returns the count."""
    n = 0
    for t in range(start, stop):
        w = ids[t]
        if subsample and _uniform(state) >= keep[w]:
            continue
        buf[n] = w
        n += 1
    return n


@_inline
def _fill_row(buf, n, i, window, negatives, state, accept, alias, cn, lab):
    """Center buf[i]'s row: a window of 1..window words either side (cut at the document's
    ends), then `negatives` noise words per context. Returns (entries, contexts)."""
    b = 1 + _below(_next(state) >> np.uint64(32), window)
    lo = max(0, i - b)
    hi = min(n, i + b + 1)
    m = 0
    for j in range(lo, hi):
        if j != i:
            cn[m] = buf[j]
            lab[m] = 1
            m += 1
    nc = m
    for k in range(nc):
        for _ in range(negatives):
            w = _noise(state, accept, alias)
            while w == cn[k]:                      # never the context word itself: draw again
                w = _noise(state, accept, alias)
            cn[m] = w
            lab[m] = 0
            m += 1
    return m, nc


@_inline
def _row_step(c, cn, lab, m, W, C, scale, lr, g, neu1e, with_loss):
    """One SGD step on sum_j BCE(sigmoid(W[c] . C[cn_j]), lab_j) over j < m, all dots at the
    row's starting values (the autograd step, even when an id repeats). Dots, sigmoids and
    updates run as separate loops so that independent dots and exps overlap in the CPU
    (22% faster here than one fused loop per entry). Returns the loss sum (0 unless with_loss)."""
    dim = W.shape[1]
    wc = W[c]                                          # (H,) view: updates write through
    for j in range(m):
        cw = C[cn[j]]
        f = np.float32(0.0)
        for k in range(dim):
            f += wc[k] * cw[k]
        g[j] = -f if lab[j] else f                     # t: the entry's loss is softplus(t)
    loss = 0.0
    for j in range(m):
        e = np.exp(min(g[j], np.float32(30.0)))        # float32 exp overflows past 88
        if with_loss:
            loss += np.log1p(e)
        p = e / (np.float32(1.0) + e)                  # sigmoid(t) = dloss/dt
        g[j] = lr * p if lab[j] else -lr * p
    neu1e[:] = 0.0
    for j in range(m):
        cw = C[cn[j]]
        gj = g[j]
        for k in range(dim):
            neu1e[k] += gj * cw[k]
    for j in range(m):
        w = cn[j]
        cw = C[w]
        gw = g[j] * scale[w]
        if gw != 0.0:                                  # frozen rows are never written
            for k in range(dim):
                cw[k] += gw * wc[k]
    sc = scale[c]
    if sc != 0.0:
        for k in range(dim):
            wc[k] += sc * neu1e[k]
    return loss


@_inline
def _pair_steps(c, cn, nc, negatives, W, C, scale, lr, g, neu1e, sub_cn, sub_lab, with_loss):
    """The row context by context: for context k, one _row_step on its entry and its own
    negatives (cn[nc + k*K : nc + (k+1)*K]), so the center's vector moves after each pair
    (gensim's and word2vec.c's order). Returns the loss sum."""
    sub_lab[0] = 1
    for j in range(1, negatives + 1):
        sub_lab[j] = 0
    loss = 0.0
    for k in range(nc):
        sub_cn[0] = cn[k]
        for j in range(negatives):
            sub_cn[1 + j] = cn[nc + k * negatives + j]
        loss += _row_step(c, sub_cn, sub_lab, negatives + 1, W, C, scale, lr, g, neu1e, with_loss)
    return loss


@_kernel
def _sgd_rows(center, cn, mask, label, W, C, scale, lr, per_pair, negatives):
    """One SGD step per stored row on sum_j mask_ij * BCE(sigmoid(W[c] . C[cn_ij]), label_ij), or
    (per_pair) one per context and its `negatives` noise words: rows in make_examples' layout.

    Returns (loss sum, entries in it, real entries)."""
    width = cn.shape[1]
    ids = np.empty(width, dtype=np.int32)             # (L,) the row's real entries
    lab = np.empty(width, dtype=np.uint8)
    g = np.empty(width, dtype=np.float32)
    neu1e = np.empty(W.shape[1], dtype=np.float32)    # (H,) the center row's update
    sub_cn = np.empty(negatives + 1, dtype=np.int32)
    sub_lab = np.empty(negatives + 1, dtype=np.uint8)
    loss = 0.0
    measured = 0
    pairs = 0
    for i in range(center.shape[0]):
        m = 0
        nc = 0
        for j in range(width):
            if mask[i, j] != 0:
                ids[m] = cn[i, j]
                lab[m] = label[i, j]
                nc += lab[m]
                m += 1
        if m == 0:
            continue
        with_loss = i % LOSS_EVERY == 0
        if per_pair:
            loss += _pair_steps(center[i], ids, nc, negatives, W, C, scale, lr, g, neu1e, sub_cn, sub_lab,
                                with_loss)
        else:
            loss += _row_step(center[i], ids, lab, m, W, C, scale, lr, g, neu1e, with_loss)
        if with_loss:
            measured += m
        pairs += m
    return loss, measured, pairs


@_kernel
def _sgd_sequences(ids, offsets, W, C, scale, lr, keep, subsample, accept, alias, window, negatives,
                   per_pair, seed):
    """Train on documents ids[offsets[d]:offsets[d+1]], drawing every row as it goes.

    Returns (loss sum, entries in it, entries trained, centers trained)."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = seed
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    buf = np.empty(longest, dtype=np.int32)           # (n,) the document after subsampling
    width = 2 * window * (1 + negatives)
    cn = np.empty(width, dtype=np.int32)               # (L,) one center's row
    lab = np.empty(width, dtype=np.uint8)
    g = np.empty(width, dtype=np.float32)
    neu1e = np.empty(W.shape[1], dtype=np.float32)
    sub_cn = np.empty(negatives + 1, dtype=np.int32)  # (1+K,) one pair: its context and negatives
    sub_lab = np.empty(negatives + 1, dtype=np.uint8)
    loss = 0.0
    measured = 0
    pairs = 0
    centers = 0
    for d in range(offsets.shape[0] - 1):
        n = _subsampled(ids, offsets[d], offsets[d + 1], keep, subsample, state, buf)
        for i in range(n):
            m, nc = _fill_row(buf, n, i, window, negatives, state, accept, alias, cn, lab)
            if nc == 0:
                continue
            with_loss = centers % LOSS_EVERY == 0
            if per_pair:
                loss += _pair_steps(buf[i], cn, nc, negatives, W, C, scale, lr, g, neu1e, sub_cn, sub_lab,
                                    with_loss)
            else:
                loss += _row_step(buf[i], cn, lab, m, W, C, scale, lr, g, neu1e, with_loss)
            if with_loss:
                measured += m
            pairs += m
            centers += 1
    return loss, measured, pairs, centers


@_kernel
def draw_rows(ids, offsets, keep, subsample, accept, alias, window, negatives, seed):
    """The rows _sgd_sequences would train on with this seed, without training:
    (center (N,) int32, doc (N,) int64, contexts_negatives (N, L) int32 zero-padded, contexts (N,))."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = seed
    width = 2 * window * (1 + negatives)
    total = offsets[-1] - offsets[0]
    center = np.empty(total, dtype=np.int32)
    doc = np.empty(total, dtype=np.int64)
    rows = np.zeros((total, width), dtype=np.int32)
    contexts = np.empty(total, dtype=np.int64)
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    buf = np.empty(longest, dtype=np.int32)
    lab = np.empty(width, dtype=np.uint8)
    r = 0
    for d in range(offsets.shape[0] - 1):
        n = _subsampled(ids, offsets[d], offsets[d + 1], keep, subsample, state, buf)
        for i in range(n):
            m, nc = _fill_row(buf, n, i, window, negatives, state, accept, alias, rows[r], lab)
            if nc == 0:
                continue
            center[r], doc[r], contexts[r] = buf[i], d, nc
            r += 1
    return center[:r], doc[:r], rows[:r], contexts[:r]

"""Skip-gram sampling: what the training kernel draws each epoch, and d2l's stored rows.

Two ways to feed pipeline/sgns.py (SkipGramConfig.draws):
  epoch (the default): the cache holds each document's word ids; `EpochDraws` carries what
    the training kernel needs to draw, every epoch anew, the subsampling, the window sizes
    and the negatives (pipeline/sgns_kernels.py), as gensim and word2vec.c do.
  stored: the d2l.ai word2vec recipe, vectorized: `make_examples` subsamples frequent
    words, draws a random window per center and `negatives` noise words per context
    ∝ count**0.75, and pads contexts + negatives with a mask and labels, once; training
    replays the stored rows every epoch. For a center with c contexts a row of width L reads

    contexts_negatives  c0 c1 … c(c-1) | n0 … n(cK-1) | 0 … 0      negatives k*K..k*K+K-1 belong to ck
    mask                1  1  …  1     | 1  …  1      | 0 … 0
    label               1  1  …  1     | 0  …  0      | 0 … 0

>>> ids, offsets = np.array([1, 2, 3, 1, 2], np.int32), np.array([0, 3, 5])   # docs [1 2 3], [1 2]
>>> counts = np.array([0, 10, 10, 10])                                        # <unk>, then words 1..3
>>> ex = make_examples(ids, offsets, counts, SkipGramConfig(subsample=None, max_window=1, negatives=1),
...                    np.random.default_rng(0))
>>> ex["center"].tolist(), ex["doc"].tolist(), ex["contexts_negatives"].shape
([1, 2, 3, 1, 2], [0, 0, 0, 1, 1], (5, 4))
>>> ex["contexts_negatives"][1, :2].tolist(), ex["label"][1].tolist(), ex["mask"][1].tolist()
([1, 3], [1, 1, 0, 0], [1, 1, 1, 1])
>>> EpochDraws.of(counts, SkipGramConfig(max_window=1, negatives=1), seed=0).draw(ids, offsets, epoch=0)[2].shape
(5, 4)

make_examples takes its randomness only from the passed Generator, consumed in a fixed order
(subsampling, windows, negatives, redraws of negatives that hit their own context):
the same seed gives the same arrays whatever the chunk size, and
make_examples(…, rng) == subsample(…, rng) then make_examples with subsample=None
on the same rng.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import PipelineError
from .configs import SkipGramConfig  # noqa: F401  (defined once, in configs.py)

NOISE_POWER = 0.75  # negatives ∝ count**0.75 (Mikolov et al. 2013; d2l; gensim's ns_exponent)
# Centers per vectorized step: bounds working memory (~13 bytes × L per center beside
# the outputs) and keeps it in cache. Speed only: the output does not depend on it.
CHUNK_CENTERS = 4096


@dataclass(frozen=True, eq=False)
class EpochDraws:
    """What the training kernel needs to draw skip-gram rows each epoch (SkipGramConfig.draws "epoch").

    keep (V,) float32: keep probabilities (subsampling), None when every word is kept;
    accept (V,) uint64 / alias (V,) int32: the noise distribution's alias table (NoiseSampler's),
      accept as a threshold on 32 random bits (probability × 2**32);
    seed: with the epoch and the batch's index, seeds each batch's stream (batch_seed).
    """
    window: int
    negatives: int
    keep: np.ndarray | None
    accept: np.ndarray
    alias: np.ndarray
    seed: int

    @classmethod
    def of(cls, counts: np.ndarray, config: SkipGramConfig, seed: int) -> EpochDraws:
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        if (counts < 0).any() or counts[1:].sum() == 0:
            raise PipelineError("vocab_counts", "must be ≥ 0 with at least one counted word")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise PipelineError("EpochDraws.seed", f"must be an int ≥ 0, got {seed!r}")
        noise = NoiseSampler(counts)
        keep = None if config.subsample is None else \
            keep_probability(counts, config.subsample, config.subsample_formula).astype(np.float32)
        accept = np.minimum(np.floor(noise.accept * 2.0 ** 32), 2.0 ** 32).astype(np.uint64)   # (V,)
        return cls(config.max_window, config.negatives, keep, accept, noise.pick[0::2].copy(), int(seed))

    def batch_seed(self, epoch: int, batch: int) -> np.uint64:
        """The stream of one batch of one epoch: independent of threads and of the other batches."""
        return np.random.SeedSequence([self.seed, epoch, batch]).generate_state(1, np.uint64)[0]

    def kernel_args(self) -> tuple:
        """(keep, subsample, accept, alias, window, negatives) as the kernels take them."""
        keep = np.ones(0, np.float32) if self.keep is None else self.keep
        return keep, self.keep is not None, self.accept, self.alias, self.window, self.negatives

    def draw(self, ids: np.ndarray, offsets: np.ndarray, epoch: int, batch: int = 0) -> tuple[np.ndarray, ...]:
        """The rows training draws from these documents in this (epoch, batch), without training:
        (center (N,) int32, doc (N,) int64, contexts_negatives (N, 2W(1+K)) int32 zero-padded,
        contexts (N,) int64); the row layout is make_examples'. For tests and inspection."""
        from .sgns_kernels import draw_rows
        ids, offsets, _ = _checked(ids, offsets, np.ones(len(self.accept), np.int64))
        return draw_rows(ids, offsets, *self.kernel_args(), self.batch_seed(epoch, batch))



def keep_probability(counts: np.ndarray, t: float, formula: str = "d2l") -> np.ndarray:
    """(V,) probability of keeping each word; words never counted get 1.

    >>> keep_probability(np.array([0, 100, 0]), t=0.01).round(3).tolist()
    [1.0, 0.1, 1.0]
    """
    total = counts[1:].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = t * total / counts                                            # (V,) t / f
        p = np.sqrt(ratio) if formula == "d2l" else (np.sqrt(1 / ratio) + 1) * ratio
    return np.nan_to_num(np.minimum(1.0, p), nan=1.0, posinf=1.0)


def subsample(ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray, t: float,
              rng: np.random.Generator, formula: str = "d2l") -> tuple[np.ndarray, np.ndarray]:
    """Keep each word with `keep_probability` (d2l: min(1, sqrt(t / f)), f = counts[w] / counts[1:].sum()).

    Returns a new CSR (ids (T',) int32, offsets (D+1,) int64); documents keep their rows.
    Frequencies come from the vocabulary, not from this batch, so a document's keep
    probabilities do not depend on which other documents share its batch.
    """
    ids, offsets, counts = _checked(ids, offsets, counts)
    keep_p = keep_probability(counts, t, formula)                              # (V,)
    keep = rng.random(len(ids)) < keep_p[ids]                                 # (T,)
    doc = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))            # (T,) document of each word
    new_offsets = np.zeros_like(offsets)
    np.cumsum(np.bincount(doc[keep], minlength=len(offsets) - 1), out=new_offsets[1:])
    return ids[keep], new_offsets


def make_examples(ids: np.ndarray, offsets: np.ndarray, vocab_counts: np.ndarray,
                  config: SkipGramConfig, rng: np.random.Generator, *,
                  chunk_centers: int = CHUNK_CENTERS) -> dict[str, np.ndarray]:
    """Skip-gram rows for every center word with at least one context.

    ids (T,) / offsets (D+1,): CSR word ids of D documents, without <unk> (id 0);
    vocab_counts (V,): Vocabulary.counts (subsampling frequencies and noise weights).
    Returns, for N centers in document then position order, L = config.row_len:
      center (N,) int32 · doc (N,) int32 row of offsets the center came from ·
      contexts_negatives (N, L) int32 · mask (N, L) uint8 · label (N, L) uint8
    """
    ids, offsets, counts = _checked(ids, offsets, vocab_counts)
    if (ids == 0).any():
        raise PipelineError("make_examples ids", "contain <unk> (0): encode with unknown='drop'")
    if not isinstance(chunk_centers, int) or chunk_centers < 1:
        raise PipelineError("make_examples chunk_centers", f"must be a positive int, got {chunk_centers!r}")
    if config.subsample is not None:
        ids, offsets = subsample(ids, offsets, counts, config.subsample, rng, config.subsample_formula)
    position, doc, left, right = draw_windows(offsets, config.max_window, rng)  # (N,) each
    key = left * (config.max_window + 1) + right                              # (N,) row layout
    shape = (len(position), config.row_len)
    out = {"center": ids[position], "doc": doc.astype(np.int32),
           "contexts_negatives": np.empty(shape, np.int32), "mask": np.empty(shape, np.uint8),
           "label": np.empty(shape, np.uint8)}
    rows, noise = RowTemplates(config), NoiseSampler(counts) if config.negatives else None
    # Scratch reused by every chunk: fresh multi-MB temporaries cost more in page
    # faults than the arithmetic on them (measured 2-3x on the negative draws).
    work = _Scratch(min(chunk_centers, len(position)), config.row_len)
    clashes = []                                                              # (flat slot, context) per chunk
    for s in range(0, len(position), chunk_centers):
        part = slice(s, s + chunk_centers)
        _fill_chunk(ids, position[part], key[part], rows, work, out["contexts_negatives"][part],
                    out["mask"][part], out["label"][part])
        if noise is not None:
            slots, context = _draw_negatives(out["contexts_negatives"][part], work, noise, rng)
            clashes.append((slots + s * config.row_len, context))
    if clashes:                                                               # after every chunk's first draw,
        _redraw_clashes(out["contexts_negatives"].reshape(-1), *map(np.concatenate, zip(*clashes)),
                        noise, rng)                                           # so chunking never shifts the rng
    return out


def _fill_chunk(ids, position, key, rows, work, row, mask, label) -> None:
    """Rows of B centers from their layouts: contexts, and each negative slot's own context word."""
    b = len(position)
    np.take(rows.mask, key, axis=0, out=mask)                                 # (B, L)
    np.take(rows.label, key, axis=0, out=label)                               # (B, L)
    where = work.index[:b]                                                    # (B, L) ids index per slot
    np.take(rows.offset, key, axis=0, out=where)
    where += position[:, None]
    np.take(ids, where, mode="clip", out=work.word[:b])                       # padding reads the center: masked
    np.multiply(work.word[:b], mask, out=row)
    np.take(rows.negative, key, axis=0, out=work.flag[:b])


class _Scratch:
    """Per-chunk work arrays, (B, L) each."""

    def __init__(self, b: int, L: int):
        self.index = np.empty((b, L), np.int64)
        self.word = np.empty((b, L), np.int32)
        self.flag = np.empty((b, L), bool)                                    # negative slots


def draw_windows(offsets: np.ndarray, max_window: int, rng: np.random.Generator):
    """Per word a window w uniform in 1..max_window, cut at its document's ends.

    Returns (position, doc, left, right), int64 (N,), for the N words that have at
    least one context: ids[position - left : position] and ids[position + 1 :
    position + 1 + right] are the contexts (a one-word document has none).
    """
    lengths = np.diff(offsets)                                                # (D,)
    doc = np.repeat(np.arange(len(lengths)), lengths)                         # (T,)
    w = rng.integers(1, max_window + 1, size=len(doc))                        # (T,)
    position = np.arange(len(doc))                                            # (T,) index into ids
    left = np.minimum(w, position - offsets[doc])                             # (T,)
    right = np.minimum(w, offsets[doc + 1] - 1 - position)                    # (T,)
    has = left + right > 0
    return position[has], doc[has], left[has], right[has]


class RowTemplates:
    """One row layout per (left, right) context count, key = left * (max_window + 1) + right.

    offset[key] ((W+1)², L) int64: each column's context position relative to the
    center: for context slots that context, for negative slots the context they belong
    to (0 for padding). mask[key], label[key] ((W+1)², L) uint8: filled slots and
    context slots; negative[key] ((W+1)², L) bool: negative slots. Read-only.
    """

    def __init__(self, config: SkipGramConfig):
        W, K, L = config.max_window, config.negatives, config.row_len
        offset = np.zeros(((W + 1) ** 2, L), np.int64)
        mask = np.zeros(((W + 1) ** 2, L), np.uint8)
        label = np.zeros(((W + 1) ** 2, L), np.uint8)
        for left in range(W + 1):
            for right in range(W + 1):
                key, rel = left * (W + 1) + right, np.r_[-left:0, 1:right + 1]  # (c,)
                c = len(rel)
                offset[key, :c * (1 + K)] = np.r_[rel, np.repeat(rel, K)]
                mask[key, :c * (1 + K)] = 1
                label[key, :c] = 1
        negative = (mask ^ label).astype(bool)
        for value in (offset, mask, label, negative):
            value.setflags(write=False)
        self.offset, self.mask, self.label, self.negative = offset, mask, label, negative


def _draw_negatives(row: np.ndarray, work: _Scratch, noise: NoiseSampler,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fill a chunk's negative slots (holding their context word) with noise words.

    Returns the flat slots (within the chunk) that drew their own context word, and
    that word: _redraw_clashes replaces them once every chunk has drawn.
    """
    flat = row.reshape(-1)                                                    # (B*L,) view
    slots = np.flatnonzero(work.flag[:len(row)])                              # (n,)
    context = flat[slots]                                                     # (n,)
    drawn = noise.draw(len(slots), rng)
    flat[slots] = drawn
    clash = np.flatnonzero(drawn == context)
    return slots[clash], context[clash]


def _redraw_clashes(flat: np.ndarray, slots: np.ndarray, context: np.ndarray, noise: NoiseSampler,
                    rng: np.random.Generator) -> None:
    """Redraw just the negatives equal to their context word until none is."""
    while len(slots):
        drawn = noise.draw(len(slots), rng)
        flat[slots] = drawn
        clash = drawn == context
        slots, context = slots[clash], context[clash]


class NoiseSampler:
    """Draws word ids ∝ counts**NOISE_POWER (never <unk>) with Walker's alias method: O(1) a draw.

    >>> NoiseSampler(np.array([0, 5, 0, 5])).probs.tolist()
    [0.0, 0.5, 0.0, 0.5]
    """

    def __init__(self, counts: np.ndarray):
        weights = np.asarray(counts, np.float64) ** NOISE_POWER              # (V,)
        weights[0] = 0.0                                                      # <unk> is never noise
        if np.count_nonzero(weights) < 2:
            raise PipelineError("NoiseSampler", "needs at least two words with a count: a negative "
                                                "must differ from its context word")
        self.probs = weights / weights.sum()                                  # (V,) target distribution
        self.accept, alias = _alias_table_of(self.probs.tobytes())            # (V,) float64, (V,) int32
        self.pick = np.stack([alias, np.arange(len(alias), dtype=np.int32)], axis=1).reshape(-1)  # (2V,)
        self._work = (np.empty(0), np.empty(0, np.int64), np.empty(0), np.empty(0, bool))

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) int32 ids: column i uniform, keep it w.p. accept[i], else take its alias.

        One float64 u a draw: floor(u * V) is the column and the fraction left decides
        (it keeps ≥ 53 - log2(V) random bits). pick[2i] is i's alias, pick[2i + 1] is i.
        """
        if len(self._work[0]) < n:
            self._work = (np.empty(n), np.empty(n, np.int64), np.empty(n), np.empty(n, bool))
        u, column, accept, keep = (a[:n] for a in self._work)
        rng.random(out=u)
        u *= len(self.accept)
        np.copyto(column, u, casting="unsafe")                                # floor
        np.minimum(column, len(self.accept) - 1, out=column)                  # u * V may round up to V
        u -= column                                                           # fraction in [0, 1)
        np.take(self.accept, column, out=accept)
        np.less(u, accept, out=keep)
        column += column
        column += keep
        return self.pick.take(column)


@functools.lru_cache(maxsize=8)
def _alias_table_of(probs: bytes) -> tuple[np.ndarray, np.ndarray]:
    """_alias_table, once per distribution: every shard of a corpus samples from the same one."""
    accept, alias = _alias_table(np.frombuffer(probs, np.float64))
    accept.flags.writeable = alias.flags.writeable = False
    return accept, alias


def _alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table: column i keeps i w.p. accept[i], else gives alias[i]."""
    V = len(probs)
    scaled = (probs * V).tolist()
    alias = list(range(V))
    small = [i for i, p in enumerate(scaled) if p < 1.0]
    large = [i for i, p in enumerate(scaled) if p >= 1.0]
    while small and large:
        s, g = small.pop(), large[-1]
        alias[s] = g                                                          # s's leftover mass goes to g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small.append(large.pop())
    for i in small + large:                                                   # rounding leftovers: exactly 1
        scaled[i] = 1.0
    return np.array(scaled, np.float64), np.array(alias, np.int32)


def _checked(ids, offsets, counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids int32 (T,), offsets int64 (D+1,) from 0 to T non-decreasing, counts int64 (V,) ≥ 0."""
    ids = np.ascontiguousarray(ids, dtype=np.int32).reshape(-1)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)
    counts = np.ascontiguousarray(counts, dtype=np.int64).reshape(-1)
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(ids) or (np.diff(offsets) < 0).any():
        raise PipelineError("offsets", f"must rise from 0 to len(ids)={len(ids)}")
    if len(ids) and (ids.min() < 0 or ids.max() >= len(counts)):
        raise PipelineError("ids", f"out of range for {len(counts)} vocabulary counts")
    if (counts < 0).any() or counts[1:].sum() == 0:
        raise PipelineError("vocab_counts", "must be ≥ 0 with at least one counted word")
    return ids, offsets, counts

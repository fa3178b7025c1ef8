"""word2vec's configs: words (WordConfig), skip-gram sampling (SkipGramConfig), training (SGNSConfig).

Re-exported by pipeline/configs.py, where every stage's config is found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from .errors import PipelineError

Draws = Literal["epoch", "stored"]
Update = Literal["row", "pair"]


# -- WordConfig (pipeline/words.py) ----------------------------------------------------

@dataclass(frozen=True)
class WordConfig:
    lowercase: bool = True  # lowercase before matching (str.lower: Unicode-aware)
    # A word is a run of letters/digits of any script ([^\W_]), joined across inner
    # apostrophes: "cat's", "don't", "o'neill's" stay whole; "_", hyphens and all other
    # punctuation split ("well-known" -> "well", "known"; "'quoted'" -> "quoted").
    pattern: str = r"[^\W_]+(?:'[^\W_]+)*"
    min_count: int = 5  # occurrences a word needs to get an id (gensim's default; d2l uses 10)

    def __post_init__(self):
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise PipelineError("WordConfig.pattern", f"not a regular expression: {err}") from None
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise PipelineError("WordConfig.min_count", f"must be a positive int, got {self.min_count!r}")


# -- SkipGramConfig (pipeline/skipgram.py) ---------------------------------------------

@dataclass(frozen=True)
class SkipGramConfig:
    # t in the keep probability, f = a word's share of all counted words; None (the default): keep
    #   every word. With draws="epoch" a word is kept or dropped anew every epoch, before the
    #   windows are drawn (as gensim does). On ~1 M-token corpora every threshold tried cost
    #   analogies (tune halves, BBC, lr 0.05, 5 epochs: none 3.5 %, gensim 1e-3 2.5 %, 1e-4 1.7 %;
    #   at 10 epochs 1e-3 lifts BBC's SimLex-999 0.21 -> 0.26 but analogies fall 3.7 -> 3.1 %:
    #   benchmarks/word2vec_tune.py). Much larger corpora usually want it (gensim's: 1e-3, gensim formula).
    subsample: float | None = None
    max_window: int = 5  # each center's window size is uniform in 1..max_window (word2vec's "reduced window")
    negatives: int = 5   # noise words per context word, ∝ count**0.75, never equal to that context word
    # draws="stored" only: row width L; None means 2 * max_window * (1 + negatives), the widest
    #   possible row. A wider L only adds padding; a narrower one is refused (rows would be cut).
    max_len: int | None = None
    # d2l: min(1, sqrt(t / f)) (Mikolov et al. 2013, the recipe's); gensim: min(1, (sqrt(f / t) + 1) t / f),
    #   word2vec.c's softer variant, which keeps more words.
    subsample_formula: Literal["d2l", "gensim"] = "d2l"
    # epoch: the cache holds what no epoch changes, each document's word ids in order (each center
    #   with its contexts at the maximum window), ~4 bytes a token; the training kernel draws the
    #   subsampling, the window sizes and the negatives anew every epoch from its seed (gensim's and
    #   word2vec.c's sampling). stored: d2l's recipe: rows of contexts + negatives drawn once at
    #   precompute and stored (epochs_of_examples copies, 2W(1+K) int32 a center); every epoch
    #   replays them. Both give the same rows' distribution; "stored" repeats one draw.
    draws: Draws = "epoch"

    def __post_init__(self):
        checks = {
            "subsample": self.subsample is None or (isinstance(self.subsample, (int, float))
                                                    and 0 < self.subsample < 1),
            "subsample_formula": self.subsample_formula in ("d2l", "gensim"),
            "max_window": isinstance(self.max_window, int) and self.max_window >= 1,
            "negatives": isinstance(self.negatives, int) and self.negatives >= 0,
            "max_len": self.max_len is None or (isinstance(self.max_len, int) and self.max_len >= 1),
            "draws": self.draws in ("epoch", "stored"),
        }
        for name, ok in checks.items():
            if not ok:
                raise PipelineError(f"SkipGramConfig.{name}", f"invalid value {getattr(self, name)!r}")
        if self.max_len is not None and self.max_len < self.widest_row:
            raise PipelineError("SkipGramConfig.max_len", f"{self.max_len} < 2 * max_window * (1 + negatives) "
                                                          f"= {self.widest_row}: rows would not fit")

    @property
    def widest_row(self) -> int:
        return 2 * self.max_window * (1 + self.negatives)

    @property
    def row_len(self) -> int:
        return self.widest_row if self.max_len is None else self.max_len


# -- SGNSConfig (pipeline/sgns.py) -----------------------------------------------------

@dataclass(frozen=True)
class SGNSConfig:
    speed_only: ClassVar[tuple[str, ...]] = ("threads",)   # batch_size sets the lr schedule: it stays
    # vector width H of both tables.
    dim: int = 100
    # passes over the examples; train asks `batches(epoch)` for each in turn. 10, twice gensim's:
    #   5 leave ~1 M-token corpora short (tune halves, BBC + Wikipedia, lr 0.05, per-row updates,
    #   4 seeds: SimLex-999 0.214 -> 0.233, analogies 5.2 -> 6.7 %, WordSim353 0.434 -> 0.536;
    #   15: 0.246, 7.0 %, 0.532). Training time grows with it: much larger corpora need fewer.
    epochs: int = 10
    # starting SGD step size (gensim's alpha): a pair's step is lr * (label - sigmoid(dot)).
    #   0.05, twice gensim's (tune halves, BBC + Wikipedia, 10 epochs: 0.025 gave SimLex 0.216 and
    #   analogies 5.6 % against 0.233 and 6.7 %; 0.075 0.240 and 6.7 %, with twice the seed spread).
    lr: float = 0.05
    # final step size (gensim's min_alpha); lr falls linearly over all rows of all epochs.
    min_lr: float = 1e-4
    # rows (stored draws: centers; per-epoch draws: corpus tokens, whole documents) per kernel
    #   call: one lr value and one loss_curve point per batch. Updates are still per row or
    #   pair; 10,000 matches gensim's job size (10,000 words).
    batch_size: int = 10_000
    # threads running the kernel on different batches at once (Hogwild: unsynchronized,
    #   so results vary run to run unless threads == 1); None = the cores this process may use.
    threads: int | None = None
    # how init_vectors fills new rows; the context table starts at zero in both.
    #   gensim: center uniform(±1/dim), gensim 4's prep_vectors; word2vec_c: uniform(±0.5/dim),
    #   as word2vec.c and gensim 3 do.
    init: Literal["gensim", "word2vec_c"] = "gensim"
    # lr multiplier for rows outside `trainable_rows`, when train is given some: 0.0 keeps
    #   them bit-identical (vocabulary growth: only new rows train); e.g. 0.1 fine-tunes
    #   the old rows slowly while the new rows train at the full rate.
    other_rows_lr_scale: float = 0.0
    # row: one SGD step per center on the summed loss of all its contexts and negatives, every
    #   dot taken at the row's starting values (d2l's batch of one row); pair: one step per
    #   (center, context) pair on that context and its negatives, the center's vector moving
    #   after each pair, as gensim and word2vec.c update. Stored rows need make_examples' layout.
    #   pair (tune halves, 10 epochs, 4 seeds each): SimLex-999 0.241 vs 0.233 on BBC + Wikipedia,
    #   0.213 vs 0.215 on BBC, the rest level; its kernel does ~12 % fewer pairs per CPU second.
    update: Update = "pair"

    def __post_init__(self):
        checks = {
            "dim": isinstance(self.dim, int) and self.dim >= 1,
            "epochs": isinstance(self.epochs, int) and self.epochs >= 1,
            "lr": self.lr > 0,
            "min_lr": 0 <= self.min_lr <= self.lr,
            "batch_size": isinstance(self.batch_size, int) and self.batch_size >= 1,
            "threads": self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
            "init": self.init in ("gensim", "word2vec_c"),
            "other_rows_lr_scale": 0.0 <= self.other_rows_lr_scale <= 1.0,
            "update": self.update in ("row", "pair"),
        }
        for name, ok in checks.items():
            if not ok:
                raise PipelineError(f"SGNSConfig.{name}", f"invalid value {getattr(self, name)!r}")

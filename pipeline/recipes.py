"""Named word2vec recipes: (SkipGramConfig, SGNSConfig) pairs by name.

    >>> skipgram, sgns = word2vec_recipe("d2l", dim=100)
    >>> skipgram.subsample, skipgram.subsample_formula, skipgram.draws, sgns.lr, sgns.dim
    (0.0001, 'd2l', 'stored', 0.025, 100)
"""

from __future__ import annotations

from .configs import SGNSConfig, SkipGramConfig
from .errors import PipelineError

# The fields where each recipe differs from the configs' defaults (pipeline/configs.py).
#   embcache: the defaults, chosen on held-out halves of gensim's test sets (BENCHMARKS.md);
#   d2l: d2l.ai's recipe: subsample 1e-4 by min(1, sqrt(t/f)), lr 0.025, 5 epochs, and the examples
#     drawn once and stored with their negatives (draws "stored"; --epochs-of-examples copies);
#   gensim: gensim's Word2Vec defaults: sample 1e-3 by word2vec.c's formula, alpha 0.025, 5 epochs,
#     one update per (center, context) pair, everything drawn anew every epoch.
WORD2VEC_RECIPES: dict[str, tuple[dict, dict]] = {
    "embcache": ({}, {}),
    "d2l": ({"subsample": 1e-4, "subsample_formula": "d2l", "draws": "stored"},
            {"lr": 0.025, "update": "row", "epochs": 5}),
    "gensim": ({"subsample": 1e-3, "subsample_formula": "gensim", "draws": "epoch"},
               {"lr": 0.025, "update": "pair", "epochs": 5}),
}


def word2vec_recipe(name: str, **sgns) -> tuple[SkipGramConfig, SGNSConfig]:
    """(SkipGramConfig, SGNSConfig) of a named recipe; `sgns` sets other SGNSConfig fields."""
    if name not in WORD2VEC_RECIPES:
        raise PipelineError("word2vec_recipe", f"unknown recipe {name!r}; one of {sorted(WORD2VEC_RECIPES)}")
    skipgram, train = WORD2VEC_RECIPES[name]
    return SkipGramConfig(**skipgram), SGNSConfig(**{**train, **sgns})

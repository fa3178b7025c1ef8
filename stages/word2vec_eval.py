"""Evaluate, query and export trained word vectors through gensim's KeyedVectors.

WordSim353-style pair files (Spearman), analogy files (accuracy over the most frequent
words), OOV ratio and nearest neighbours all come from gensim's own functions; the
store hands it the vectors. Defaults are the benchmark files gensim ships.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..storage import FeatureStore
from ..storage.query import as_matrix
from .stage import Stage

EXPORT_FORMATS = ("word2vec", "word2vec-binary", "glove")
EVALUATE = Stage("evaluate-word2vec", 2)   # the run ledger's entry for evaluate() on the default files
                                           #   (2: SimLex-999 joined WordSim353 among them)


def identity(word_vectors_fp: str) -> str:
    """What evaluate() on gensim's default files depends on: the run ledger skips it while unchanged."""
    return EVALUATE.identity(word_vectors=word_vectors_fp, files="gensim wordsim353 + simlex999 + questions-words")


def default_pairs() -> str:
    from gensim.test.utils import datapath
    return datapath("wordsim353.tsv")


def default_pair_files() -> list[str]:
    """Every word-similarity file gensim ships: WordSim353 (relatedness) and SimLex-999 (similarity)."""
    from gensim.test.utils import datapath
    return [datapath("wordsim353.tsv"), datapath("simlex999.txt")]


def default_analogies() -> str:
    from gensim.test.utils import datapath
    return datapath("questions-words.txt")


def keyed_vectors(store: FeatureStore, fingerprint: str | None = None):
    """word_vectors (current, or a given fingerprint) as gensim KeyedVectors, in id (frequency) order."""
    from gensim.models import KeyedVectors
    table = store.open("word_vectors", fingerprint).read(["word", "id", "vector"])
    table = table.sort_by("id")
    vectors = as_matrix(table["vector"])                            # (V-1, H)
    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(table["word"].to_pylist(), np.ascontiguousarray(vectors))
    return kv


def evaluate(kv, pairs: list[str] | None = None, analogies: str | None = None,
             restrict_vocab: int = 30000) -> dict:
    """{"pairs": {file: {"spearman", "pearson", "oov_ratio"}}, "analogies": {"accuracy", "file"}}."""
    out = {"pairs": {}, "analogies": {}}
    for path in pairs or default_pair_files():
        try:
            pearson, spearman, oov = kv.evaluate_word_pairs(path, restrict_vocab=restrict_vocab)
        except ValueError:        # scipy needs 2+ pairs: a small vocabulary knows fewer
            out["pairs"][os.path.basename(path)] = {"spearman": None, "pearson": None, "oov_ratio": 1.0,
                                                    "note": "fewer than 2 pairs in the vocabulary"}
            continue
        out["pairs"][os.path.basename(path)] = {"spearman": float(spearman.statistic), "pearson": float(pearson[0]),
                                                "oov_ratio": float(oov) / 100.0}
    path = analogies or default_analogies()
    accuracy, sections = kv.evaluate_word_analogies(path, restrict_vocab=restrict_vocab)
    total = sum(len(s["correct"]) + len(s["incorrect"]) for s in sections if s["section"] == "Total accuracy")
    out["analogies"] = {"file": os.path.basename(path), "accuracy": float(accuracy) if total else None,
                        "questions": total}
    return out


def neighbours(kv, word: str, k: int = 10) -> list[tuple[str, float]]:
    """Nearest words by cosine (gensim most_similar); KeyError names an unknown word."""
    return [(w, float(s)) for w, s in kv.most_similar(word, topn=k)]


def export(kv, fmt: str, path: str | os.PathLike) -> Path:
    """word2vec text / binary (with header) or GloVe text (no header); all load with gensim."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    kv.save_word2vec_format(str(path), binary=fmt == "word2vec-binary", write_header=fmt != "glove")
    return Path(path)


def loss_png(loss_curve: list[float], path: str | os.PathLike, title: str = "skip-gram loss") -> Path:
    """The training loss per batch as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    ax.plot(np.arange(1, len(loss_curve) + 1), loss_curve, lw=1.2)
    ax.set_xlabel("batch")
    ax.set_ylabel("masked sigmoid BCE")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)

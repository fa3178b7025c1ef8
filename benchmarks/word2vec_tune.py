"""Choose word2vec's defaults on a tuning set held out from the evaluation sets.

    python benchmarks/word2vec_tune.py --corpus bbc --seeds 3 --configs none,gensim_1e-3 --lr 0.05
    python benchmarks/word2vec_tune.py --corpus bbc --seeds 3 --configs none --update pair --gensim

Every similarity and analogy file gensim ships (wordsim353.tsv, simlex999.txt,
questions-words.txt) is cut in two by a hash of each line: the `tune` half chooses
settings, the `eval` half (never looked at while choosing) reports them. A candidate
is trained in memory exactly as the store trains it: documents in the store's order
(by text hash), the kernel drawing subsampling, windows and negatives anew every epoch
(SkipGramConfig.draws "epoch"), or, for the stored candidates, d2l's rows drawn once at
precompute (`--epochs-of-examples` draws, replayed). gensim at its own defaults runs on
the same seeds for reference (`--gensim`). One JSON line per (candidate, seed) goes to
benchmarks/results/word2vec_tune.jsonl; the summary (mean ± std over seeds) is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from embcache.pipeline.sgns import SGNSConfig, init_vectors, train
from embcache.pipeline.skipgram import EpochDraws, SkipGramConfig, make_examples
from embcache.pipeline.words import Vocabulary, WordConfig, tokenize_words
from corpora import bbc, bbc_and_wikipedia  # benchmarks/corpora.py

RESULTS = Path(__file__).resolve().parent / "results" / "word2vec_tune.jsonl"
SIMILARITY = ("wordsim353.tsv", "simlex999.txt")
ANALOGY = "questions-words.txt"

CANDIDATES = {   # name -> SkipGramConfig (lr, update, epochs: options)
    "none": SkipGramConfig(subsample=None),
    "gensim_1e-3": SkipGramConfig(subsample=1e-3, subsample_formula="gensim"),
    "gensim_3e-4": SkipGramConfig(subsample=3e-4, subsample_formula="gensim"),
    "gensim_1e-4": SkipGramConfig(subsample=1e-4, subsample_formula="gensim"),
    "gensim_1e-5": SkipGramConfig(subsample=1e-5, subsample_formula="gensim"),
    "d2l_1e-3": SkipGramConfig(subsample=1e-3, subsample_formula="d2l"),
    "d2l_1e-4": SkipGramConfig(subsample=1e-4, subsample_formula="d2l"),
    "stored_none": SkipGramConfig(subsample=None, draws="stored"),
    "stored_d2l_1e-4": SkipGramConfig(subsample=1e-4, subsample_formula="d2l", draws="stored"),
}


def split_files(tmp: Path) -> dict[str, dict[str, str]]:
    """{file: {"tune": path, "eval": path, "full": path}}: each line to one half by its sha256."""
    from gensim.test.utils import datapath
    out = {}
    for name in (*SIMILARITY, ANALOGY):
        halves = {"tune": [], "eval": []}
        for line in Path(datapath(name)).read_text(encoding="utf-8").splitlines():
            if line.startswith((":", "#")) or not line.strip():
                halves["tune"].append(line)                  # headers and section names: both halves
                halves["eval"].append(line)
                continue
            half = "tune" if hashlib.sha256(line.lower().encode()).digest()[0] % 2 == 0 else "eval"
            halves[half].append(line)
        out[name] = {"full": datapath(name)}
        for half, lines in halves.items():
            path = tmp / f"{half}-{name}"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            out[name][half] = str(path)
    return out


def quality(words, vectors: np.ndarray, files: dict) -> dict[str, float]:
    """Spearman per similarity file and analogy accuracy (restrict 30k), per half and full."""
    from gensim.models import KeyedVectors
    kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(list(words), np.ascontiguousarray(vectors, np.float32))
    out = {}
    for half in ("tune", "eval", "full"):
        for name in SIMILARITY:
            _, spearman, _ = kv.evaluate_word_pairs(files[name][half])
            out[f"{half}:{name}"] = float(spearman[0])
        out[f"{half}:analogy"] = float(kv.evaluate_word_analogies(files[ANALOGY][half], restrict_vocab=30_000)[0])
    return out


def run_embcache(ids, offsets, vocab, skipgram: SkipGramConfig, sgns: SGNSConfig, seed: int,
                 epochs_of_examples: int) -> tuple[dict, np.ndarray, np.ndarray]:
    center, context = init_vectors(len(vocab), sgns.dim, np.random.default_rng(seed), sgns.init)
    precompute = 0.0
    if skipgram.draws == "epoch":
        report = train([{"ids": ids, "offsets": offsets}], center, context, sgns,
                       draws=EpochDraws.of(vocab.counts, skipgram, seed))
    else:
        rng = np.random.default_rng(1000 + seed)
        start = time.perf_counter()
        stored = [make_examples(ids, offsets, vocab.counts, skipgram, rng) for _ in range(epochs_of_examples)]
        precompute = time.perf_counter() - start
        report = train(lambda e: [stored[e % epochs_of_examples]], center, context, sgns,
                       total_examples=len(stored[0]["center"]))
    return ({"words_per_s": report.examples_per_s, "pairs_per_s": report.pairs_per_s,
             "words": report.examples, "train_s": report.seconds, "precompute_s": precompute},
            center, context)


def run_gensim(tokens, seed: int, threads: int, epochs: int = 5, **overrides) -> tuple[dict, list, np.ndarray]:
    """gensim Word2Vec(sg=1) at its own defaults (sample 1e-3, alpha 0.025, window 5, negative 5)."""
    from gensim.models import Word2Vec
    model = Word2Vec(sg=1, negative=5, window=5, vector_size=100, min_count=5, workers=threads, seed=seed,
                     **overrides)
    model.build_vocab(tokens)
    start = time.perf_counter()
    effective, _ = model.train(tokens, total_examples=len(tokens), epochs=epochs)
    seconds = time.perf_counter() - start
    return {"words_per_s": effective / seconds, "words": effective, "train_s": seconds}, \
        model.wv.index_to_key, model.wv.vectors


def store_order(texts: list[str]) -> list[str]:
    """The order training reads a corpus from the store: shards of documents sorted by text hash."""
    from embcache.pipeline.ingest import text_sha
    return sorted(texts, key=text_sha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("bbc", "bbc+wiki"), default="bbc")
    parser.add_argument("--configs", default="none")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gensim", action="store_true", help="also gensim at its defaults (simple_preprocess)")
    parser.add_argument("--gensim-matched", action="store_true",
                        help="also gensim on embcache's tokens and order at --lr, --min-lr, --epochs, no subsampling")
    parser.add_argument("--order", choices=("store", "corpus"), default="store",
                        help="documents in the store's order (by text hash) or the corpus's")
    parser.add_argument("--lr", type=float, default=SGNSConfig.lr)
    parser.add_argument("--min-lr", type=float, default=SGNSConfig.min_lr)
    parser.add_argument("--epochs", type=int, default=SGNSConfig.epochs)
    parser.add_argument("--update", choices=("row", "pair"), default=SGNSConfig.update)
    parser.add_argument("--w-plus-c", action="store_true", help="also score center + context vectors (w+c rows)")
    parser.add_argument("--epochs-of-examples", type=int, default=5, help="stored candidates: draws stored")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--negatives", type=int, default=None)
    parser.add_argument("--tag", default="")
    parser.add_argument("--report", action="store_true",
                        help="print the eval halves and full files too (only once the settings are chosen)")
    args = parser.parse_args()
    logging.getLogger("gensim").setLevel(logging.WARNING)
    from gensim.utils import simple_preprocess

    texts = bbc() if args.corpus == "bbc" else bbc_and_wikipedia()
    tokens = tokenize_words(store_order(texts) if args.order == "store" else texts, WordConfig())
    vocab = Vocabulary.build(tokens, WordConfig().min_count)
    ids, offsets = vocab.encode(tokens)
    gensim_tokens = [simple_preprocess(t) for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        files = split_files(Path(tmp))
        RESULTS.parent.mkdir(exist_ok=True)
        rows = []
        names = [n for n in args.configs.split(",") if n] + (["gensim_defaults"] if args.gensim else []) \
            + (["gensim_matched"] if args.gensim_matched else [])
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name in names:
                load = os.getloadavg()[0]
                settings = {}
                if name == "gensim_defaults":
                    speed, words, vectors = run_gensim(gensim_tokens, seed, args.threads)
                    q = quality(words, vectors, files)
                elif name == "gensim_matched":
                    cut = [t[i:i + 10_000] for t in tokens for i in range(0, max(len(t), 1), 10_000)]
                    speed, words, vectors = run_gensim(cut, seed, args.threads, epochs=args.epochs, sample=0,
                                                       alpha=args.lr, min_alpha=args.min_lr)
                    q = quality(words, vectors, files)
                else:
                    skipgram = replace(CANDIDATES[name], **{k: v for k, v in (("max_window", args.window),
                                                                              ("negatives", args.negatives)) if v})
                    sgns = SGNSConfig(threads=args.threads, lr=args.lr, min_lr=args.min_lr, epochs=args.epochs,
                                      update=args.update)
                    speed, center, context = run_embcache(ids, offsets, vocab, skipgram, sgns, seed,
                                                          args.epochs_of_examples)
                    q = quality(vocab.words[1:], center[1:], files)
                    if args.w_plus_c:
                        both = quality(vocab.words[1:], (center + context)[1:], files)
                        q.update({f"w+c {k}": v for k, v in both.items()})
                    settings = {"lr": sgns.lr, "min_lr": sgns.min_lr, "epochs": sgns.epochs, "update": sgns.update,
                                "window": skipgram.max_window, "negatives": skipgram.negatives,
                                "draws": skipgram.draws, "K": args.epochs_of_examples}
                row = {"corpus": args.corpus, "name": name + args.tag, "seed": seed, "load": round(load, 2),
                       "order": args.order,
                       **settings, **speed, **q}
                rows.append(row)
                with RESULTS.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(name + args.tag, seed, {k: round(v, 3) for k, v in q.items() if "tune:" in k},
                      f"{speed['words_per_s']:.0f} w/s load {load:.1f}", flush=True)
    summarize(rows, ("tune", "eval", "full") if args.report else ("tune",))


def summarize(rows: list[dict], halves: tuple[str, ...]) -> None:
    """Mean ± std over seeds per candidate; while choosing, the tune halves only."""
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        print(f"== {name} ({len(mine)} seeds)  words/s {np.mean([r['words_per_s'] for r in mine]):.0f}")
        for k in (k for k in mine[0] if k.split(":")[0].split()[-1] in halves and ":" in k):
            v = [r[k] for r in mine]
            print(f"   {k:40s} {np.mean(v):.4f} ± {np.std(v):.4f}")


if __name__ == "__main__":
    main()

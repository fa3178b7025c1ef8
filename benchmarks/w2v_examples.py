"""Skip-gram example throughput: embcache `make_examples` beside d2l's per-word Python loop.

The stored-rows recipe (SkipGramConfig.draws "stored", word2vec_recipe("d2l")); by default
the store keeps each document's ids and training draws the rows (benchmarks/word2vec.py).

    python benchmarks/w2v_examples.py                  # BBC news + gensim's Wikipedia sample
    python benchmarks/w2v_examples.py --repeats 1 --docs 300

Both methods start from the same encoded corpus (CSR word ids, <unk> dropped) and the
same parameters (subsample t, max window, negatives per context, row width L), and
end with padded numpy arrays (center, contexts_negatives, mask, label):
  a. d2l: the d2l.ai "word2vec pretraining dataset" code, one Python step per word
     (subsample, get_centers_and_contexts, get_negatives with its cached
     random.choices generator, batchify), padded to the same L
  b. embcache `make_examples`: whole-array numpy steps
Rounds interleave the methods; the best round of each is kept (the machine is
shared). Prints JSON and writes it to benchmarks/results/w2v_examples.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

from embcache.pipeline.skipgram import CHUNK_CENTERS, SkipGramConfig, make_examples
from embcache.pipeline.words import Vocabulary, WordConfig, tokenize_words
from corpora import bbc_and_wikipedia  # benchmarks/corpora.py (scripts run from benchmarks/)

RESULTS = Path(__file__).resolve().parent / "results" / "w2v_examples.json"


class RandomGenerator:
    """d2l's sampler: draw index ∈ [1, n] by the weights, 10,000 draws cached at a time."""

    def __init__(self, sampling_weights):
        self.population = list(range(1, len(sampling_weights) + 1))
        self.sampling_weights = sampling_weights
        self.candidates = []
        self.i = 0

    def draw(self):
        if self.i == len(self.candidates):
            self.candidates = random.choices(self.population, self.sampling_weights, k=10000)
            self.i = 0
        self.i += 1
        return self.candidates[self.i - 1]


def d2l_examples(lines: list[list[int]], counts: list[int], config: SkipGramConfig, seed: int) -> dict:
    """d2l's loops on id lists, same parameters; rows padded to config.row_len.

    As in d2l, a negative is redrawn when it equals any of its center's contexts
    (make_examples redraws only a negative equal to its own context word).
    """
    random.seed(seed)
    total, t, W, K, L = sum(counts[1:]), config.subsample, config.max_window, config.negatives, config.row_len
    lines = [[w for w in line if random.uniform(0, 1) < math.sqrt(t / counts[w] * total)] for line in lines]
    centers, contexts, docs = [], [], []
    for d, line in enumerate(lines):
        if len(line) < 2:
            continue
        centers += line
        docs += [d] * len(line)
        for i in range(len(line)):
            window_size = random.randint(1, W)
            indices = list(range(max(0, i - window_size), min(len(line), i + 1 + window_size)))
            indices.remove(i)
            contexts.append([line[idx] for idx in indices])
    generator = RandomGenerator([counts[i] ** 0.75 for i in range(1, len(counts))])
    negatives = []
    for ctx in contexts:
        negs = []
        while len(negs) < len(ctx) * K:
            neg = generator.draw()
            if neg not in ctx:
                negs.append(neg)
        negatives.append(negs)
    rows, masks, labels = [], [], []
    for ctx, negs in zip(contexts, negatives):
        cur = len(ctx) + len(negs)
        rows.append(ctx + negs + [0] * (L - cur))
        masks.append([1] * cur + [0] * (L - cur))
        labels.append([1] * len(ctx) + [0] * (L - len(ctx)))
    return {"center": np.array(centers, np.int32), "doc": np.array(docs, np.int32),
            "contexts_negatives": np.array(rows, np.int32), "mask": np.array(masks, np.uint8),
            "label": np.array(labels, np.uint8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None, help="use only the first N documents")
    parser.add_argument("--min-count", type=int, default=WordConfig.min_count)
    parser.add_argument("--subsample", type=float, default=SkipGramConfig.subsample)
    parser.add_argument("--max-window", type=int, default=SkipGramConfig.max_window)
    parser.add_argument("--negatives", type=int, default=SkipGramConfig.negatives)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (best per method is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = bbc_and_wikipedia()[:args.docs]
    word_config = WordConfig(min_count=args.min_count)
    start = time.perf_counter()
    tokens = tokenize_words(texts, word_config)
    tokenize_s = time.perf_counter() - start
    start = time.perf_counter()
    vocab = Vocabulary.build(tokens, word_config.min_count)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    ids, offsets = vocab.encode(tokens)
    encode_s = time.perf_counter() - start
    config = SkipGramConfig(subsample=args.subsample, max_window=args.max_window, negatives=args.negatives,
                            draws="stored")
    lines = [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    counts = vocab.counts.tolist()

    methods = {
        "a_d2l_loop": lambda: d2l_examples(lines, counts, config, args.seed),
        "b_embcache": lambda: make_examples(ids, offsets, vocab.counts, config, np.random.default_rng(args.seed)),
    }
    load_before = os.getloadavg()[0]
    rate, out = dict.fromkeys(methods, 0.0), {}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            out[name] = fn()
            rate[name] = max(rate[name], len(out[name]["center"]) / (time.perf_counter() - start))

    def shape(ex: dict) -> dict:
        n = len(ex["center"])
        return {"centers": n, "mean_contexts_per_center": round(float(ex["label"].sum() / n), 3),
                "filled_share": round(float(ex["mask"].sum() / ex["mask"].size), 3),
                "bytes": int(sum(a.nbytes for a in ex.values()))}

    report = {
        "setup": {"documents": len(texts), "tokens": int(sum(map(len, tokens))),
                  "tokens_in_vocab": int(len(ids)), "vocab_size": len(vocab), "min_count": vocab.min_count,
                  "config": {"subsample": config.subsample, "max_window": config.max_window,
                             "negatives": config.negatives, "row_len": config.row_len,
                             "chunk_centers": CHUNK_CENTERS},
                  "repeats": args.repeats, "seed": args.seed, "numpy": np.__version__,
                  "cpu_count": os.cpu_count(), "machine": platform.machine(),
                  "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "prep_s": {"tokenize_words": round(tokenize_s, 3), "vocabulary_build": round(build_s, 3),
                   "vocabulary_encode": round(encode_s, 3)},
        "examples": {name: shape(ex) for name, ex in out.items()},
        "centers_per_s": {name: round(r) for name, r in rate.items()},
        "ratio_b_over_a": round(rate["b_embcache"] / rate["a_d2l_loop"], 1),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

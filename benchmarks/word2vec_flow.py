"""word2vec through the store and the Prefect flows, beside gensim at its defaults, in the same run.

    python benchmarks/word2vec_flow.py                          # BBC, then BBC + Wikipedia; 3 seeds
    python benchmarks/word2vec_flow.py --corpus bbc --seeds 3

Both tools at their own defaults, as their users get them:
  embcache: `featurize word2vec` + `train word2vec --dim 100 --epochs 5`, i.e. the flows
    with WordConfig(), SkipGramConfig(), Word2VecSection's epochs_of_examples and
    SGNSConfig(dim=100, epochs=5); vectors read back from the store.
  gensim: Word2Vec(sg=1, negative=5, window=5, vector_size=100, min_count=5, epochs=5),
    sample 1e-3 and alpha 0.025 (its defaults), on gensim.utils.simple_preprocess tokens,
    workers = --threads.
  gensim matched: the same Word2Vec on embcache's tokens (pipeline.words, documents cut at
    10,000 tokens, gensim's limit) with embcache's defaults where gensim has the knob
    (sample 0 = no subsampling, alpha = SGNSConfig.lr): explains a difference, not a baseline.
Scores (gensim's own functions): Spearman on every word-similarity file gensim ships
(wordsim353.tsv, simlex999.txt) and analogy accuracy on questions-words.txt (restrict
30,000), mean ± std over seeds; a seed is a new example draw and a new init. Speed:
corpus words per second of training (corpus tokens in each tool's vocabulary × epochs /
seconds) for both, with each tool's own "effective words"; embcache's seconds
are the train task's (reading the shards + the kernel). Rounds interleave the tools.
Writes benchmarks/results/word2vec_flow-<corpus>-K<epochs of examples>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from corpora import bbc, bbc_and_wikipedia  # noqa: E402  benchmarks/corpora.py

RESULTS = Path(__file__).resolve().parent / "results" / "word2vec_flow.json"
MAX_DOC = 10_000  # gensim's MAX_WORDS_IN_BATCH: it truncates longer sentences
SIMILARITY = ("wordsim353.tsv", "simlex999.txt")


def scores(kv) -> dict[str, float]:
    from gensim.test.utils import datapath
    from embcache.stages.word2vec_eval import evaluate
    r = evaluate(kv, [datapath(f) for f in SIMILARITY])
    return {**{f: r["pairs"][f]["spearman"] for f in SIMILARITY}, "analogies": r["analogies"]["accuracy"]}


def run_gensim(tokens, seed: int, threads: int, **settings) -> dict:
    from gensim.models import Word2Vec
    model = Word2Vec(sg=1, negative=5, window=5, vector_size=100, min_count=5, workers=threads, seed=seed,
                     **settings)
    model.build_vocab(tokens)
    start = time.perf_counter()
    effective, _ = model.train(tokens, total_examples=len(tokens), epochs=5)
    seconds = time.perf_counter() - start
    in_vocab = sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key)   # tokens it trains on
    return {"seconds": seconds, "corpus_words_per_s": in_vocab * 5 / seconds, "effective_words_per_s": effective / seconds,
            **scores(model.wv)}


def summary(runs: list[dict]) -> dict:
    keys = [*SIMILARITY, "analogies", "corpus_words_per_s", "effective_words_per_s", "seconds"]
    return {k: {"mean": round(float(np.mean([r[k] for r in runs])), 4),
                "std": round(float(np.std([r[k] for r in runs])), 4)} for k in keys}


def bench_corpus(name: str, texts: list[str], args, tmp: Path) -> dict:
    from gensim.utils import simple_preprocess
    from embcache.flows.featurize_flows import ingest_flow
    from embcache.flows.run_config import Word2VecSection
    from embcache.flows.word2vec_flows import featurize_word2vec_flow, train_word2vec_flow
    from embcache.pipeline.configs import SGNSConfig, SkipGramConfig, WordConfig
    from embcache.pipeline.ingest import Source
    from embcache.pipeline.words import Vocabulary, tokenize_words
    from embcache.stages.word2vec_eval import keyed_vectors
    from embcache.storage import FeatureStore

    words, skipgram, sgns = WordConfig(), SkipGramConfig(), SGNSConfig(dim=100, epochs=5, threads=args.threads)
    tokens = tokenize_words(texts, words)
    vocab = Vocabulary.build(tokens, words.min_count)
    in_vocab = int(sum(vocab.counts[1:]))
    cut = [t[i:i + MAX_DOC] for t in tokens for i in range(0, max(len(t), 1), MAX_DOC)]
    gensim_tokens = [simple_preprocess(t) for t in texts]
    src = tmp / f"{name}.jsonl"
    with src.open("w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"doc{i:05d}", "text": text}) + "\n")
    store = str(tmp / f"store-{name}")
    ingest_flow(name, [Source(str(src), format="jsonl", id_column="id")], store=store)
    K = args.epochs_of_examples or Word2VecSection.epochs_of_examples
    runs = {"embcache": [], "gensim_defaults": [], "gensim_matched": []}
    load = [os.getloadavg()[0]]
    for seed in range(args.seeds):
        start = time.perf_counter()
        features = featurize_word2vec_flow(name, words, skipgram, K, seed, store=store)
        featurize_s = time.perf_counter() - start
        result = train_word2vec_flow(name, sgns, seed, store=store)
        kv = keyed_vectors(FeatureStore(store), result["fingerprint"])
        runs["embcache"].append({"seconds": result["seconds"], "featurize_s": featurize_s, "rows": features["rows"],
                                 "corpus_words_per_s": in_vocab * sgns.epochs / result["seconds"],
                                 "effective_words_per_s": result["examples"] / result["seconds"], **scores(kv)})
        runs["gensim_defaults"].append(run_gensim(gensim_tokens, seed, args.threads))
        runs["gensim_matched"].append(run_gensim(cut, seed, args.threads, sample=skipgram.subsample or 0,
                                                 alpha=sgns.lr, min_alpha=sgns.min_lr))
        load.append(os.getloadavg()[0])
        print(name, seed, {k: {m: round(v, 4) for m, v in r[-1].items() if m in (*SIMILARITY, "analogies")}
                           for k, r in runs.items()}, flush=True)
    out = {k: summary(v) for k, v in runs.items()}
    e, g = out["embcache"], out["gensim_defaults"]
    return {"documents": len(texts), "corpus_tokens_in_vocab": in_vocab, "vocab_words": len(vocab) - 1,
            "epochs_of_examples": K, "load_avg_1min_per_round": [round(x, 2) for x in load],
            "featurize_s_mean": round(float(np.mean([r["featurize_s"] for r in runs["embcache"]])), 2),
            "summary": out,
            "embcache_minus_gensim_defaults": {k: round(e[k]["mean"] - g[k]["mean"], 4)
                                               for k in (*SIMILARITY, "analogies")},
            "speed_ratio_corpus_words": round(e["corpus_words_per_s"]["mean"] / g["corpus_words_per_s"]["mean"], 2),
            "per_seed": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("bbc", "bbc+wiki", "both"), default="both")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=int, default=None, help="only the first N documents (a smoke test)")
    parser.add_argument("--epochs-of-examples", type=int, default=None,
                        help="stored draws (default: Word2VecSection's, what `featurize word2vec` uses)")
    args = parser.parse_args()
    logging.getLogger("gensim").setLevel(logging.WARNING)
    from embcache.pipeline.configs import SGNSConfig, SkipGramConfig
    corpora = {"bbc": bbc, "bbc+wiki": bbc_and_wikipedia}
    names = list(corpora) if args.corpus == "both" else [args.corpus]
    report = {"setup": {"seeds": args.seeds, "threads": args.threads, "cpu_count": os.cpu_count(),
                        "machine": platform.machine(), "embcache_skipgram": repr(SkipGramConfig()),
                        "embcache_sgns": repr(SGNSConfig(dim=100, epochs=5)),
                        "gensim": "Word2Vec(sg=1, negative=5, window=5, vector_size=100, min_count=5, epochs=5), "
                                  "sample 1e-3, alpha 0.025, simple_preprocess"}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            report[name] = bench_corpus(name.replace("+", "_"), corpora[name]()[:args.docs], args, Path(tmp))
    out = RESULTS.with_name(f"word2vec_flow-{args.corpus}-K{report[names[0]]['epochs_of_examples']}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v if k == "setup" else {m: v[m] for m in ("summary", "embcache_minus_gensim_defaults",
                                                                   "speed_ratio_corpus_words")}
                      for k, v in report.items()}, indent=2))


if __name__ == "__main__":
    main()

"""word2vec through the store and the Prefect flows, beside gensim at its defaults, in the same run.

    python benchmarks/word2vec_flow.py                          # BBC, then BBC + Wikipedia; 3 seeds (~8 min, 2 cores)
    python benchmarks/word2vec_flow.py --corpus bbc --seeds 1 --docs 300     # a smoke test

Both tools at their own defaults, as their users get them:
  embcache: `featurize word2vec` + `train word2vec`, i.e. the flows with WordConfig(),
    SkipGramConfig() (draws "epoch": the store holds each document's word ids, the kernel
    draws windows, negatives and subsampling anew every epoch) and SGNSConfig(); vectors
    read back from the store.
  gensim: Word2Vec(sg=1, negative=5, window=5, vector_size=100, min_count=5, epochs=5),
    sample 1e-3 and alpha 0.025 (its defaults), on gensim.utils.simple_preprocess tokens,
    workers = --threads.
  gensim matched: the same Word2Vec on embcache's tokens (pipeline.words, documents cut at
    10,000 tokens, gensim's limit) with embcache's settings where gensim has the knob
    (sample, alpha, min_alpha, epochs): explains a difference, not a baseline; it is also
    gensim's speed at embcache's epochs and settings (equal epochs, equal work).
Scores (gensim's own functions): Spearman on every word-similarity file gensim ships
(wordsim353.tsv, simlex999.txt) and analogy accuracy on questions-words.txt (restrict
30,000), mean ± std over seeds; a seed is a new init and new draws. Speed: corpus
words per second of training (corpus tokens in each tool's vocabulary × epochs /
seconds) for both, and each tool's own "effective words" (centers trained) per second;
embcache's seconds are the train task's (reading the shards + the kernel). Rounds
interleave the tools. Storage: bytes per in-vocabulary token of the w2v_examples table,
and of the same corpus's stored rows (draws "stored", one draw: the default before
issue 30) for comparison. The nearest neighbours of said, market, government, film
from both tools (seed 0) are printed as a Markdown table.
Writes benchmarks/results/word2vec_flow-<corpus>.json.
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
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")   # 20 s fails on a busy machine

from corpora import bbc, bbc_and_wikipedia  # noqa: E402  benchmarks/corpora.py

RESULTS = Path(__file__).resolve().parent / "results"
MAX_DOC = 10_000  # gensim's MAX_WORDS_IN_BATCH: it truncates longer sentences
SIMILARITY = ("wordsim353.tsv", "simlex999.txt")
PROBES = ("said", "market", "government", "film")
GENSIM_EPOCHS = 5


def scores(kv) -> dict[str, float]:
    from gensim.test.utils import datapath
    from embcache.stages.word2vec_eval import evaluate
    r = evaluate(kv, [datapath(f) for f in SIMILARITY])
    return {**{f: r["pairs"][f]["spearman"] for f in SIMILARITY}, "analogies": r["analogies"]["accuracy"]}


def neighbours(kv) -> dict[str, list[str]]:
    return {w: [n for n, _ in kv.most_similar(w, topn=10)] if w in kv else [] for w in PROBES}


def run_gensim(tokens, seed: int, threads: int, epochs: int = GENSIM_EPOCHS, **settings) -> tuple[dict, object]:
    from gensim.models import Word2Vec
    model = Word2Vec(sg=1, negative=5, window=5, vector_size=100, min_count=5, workers=threads, seed=seed,
                     **settings)
    model.build_vocab(tokens)
    start = time.perf_counter()
    effective, _ = model.train(tokens, total_examples=len(tokens), epochs=epochs)
    seconds = time.perf_counter() - start
    in_vocab = sum(model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key)   # tokens it trains on
    return {"seconds": seconds, "corpus_words_per_s": in_vocab * epochs / seconds,
            "effective_words_per_s": effective / seconds, **scores(model.wv)}, model.wv


def summary(runs: list[dict]) -> dict:
    keys = [*SIMILARITY, "analogies", "corpus_words_per_s", "effective_words_per_s", "seconds"]
    return {k: {"mean": round(float(np.mean([r[k] for r in runs])), 4),
                "std": round(float(np.std([r[k] for r in runs])), 4)} for k in keys}


def table_bytes(store: str, corpus: str) -> int:
    from embcache.storage import FeatureStore
    fs = FeatureStore(store)
    table = fs.open("w2v_examples", fs.resolve_linked(corpus, "w2v_examples"))
    return sum(shard.bytes for shard in table.manifest().shards)


def bench_corpus(name: str, texts: list[str], args, tmp: Path) -> dict:
    from dataclasses import replace

    from gensim.utils import simple_preprocess
    from embcache.flows.featurize_flows import ingest_flow
    from embcache.flows.run_config import Word2VecSection
    from embcache.flows.word2vec_flows import featurize_word2vec_flow, train_word2vec_flow
    from embcache.pipeline.configs import SGNSConfig, SkipGramConfig, WordConfig
    from embcache.pipeline.ingest import Source
    from embcache.pipeline.words import Vocabulary, tokenize_words
    from embcache.stages.word2vec_eval import keyed_vectors
    from embcache.storage import FeatureStore

    words, skipgram, sgns = WordConfig(), SkipGramConfig(), SGNSConfig(threads=args.threads)
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
    runs = {"embcache": [], "gensim_defaults": [], "gensim_matched": []}
    lists = {}
    load = [os.getloadavg()[0]]
    for seed in range(args.seeds):
        start = time.perf_counter()
        features = featurize_word2vec_flow(name, words, skipgram, Word2VecSection.epochs_of_examples, seed, store=store)
        featurize_s = time.perf_counter() - start
        result = train_word2vec_flow(name, sgns, seed, store=store)
        kv = keyed_vectors(FeatureStore(store), result["fingerprint"])
        runs["embcache"].append({"seconds": result["seconds"], "featurize_s": featurize_s, "rows": features["rows"],
                                 "corpus_words_per_s": in_vocab * sgns.epochs / result["seconds"],
                                 "effective_words_per_s": result["examples"] / result["seconds"], **scores(kv)})
        run, gensim_kv = run_gensim(gensim_tokens, seed, args.threads)
        runs["gensim_defaults"].append(run)
        if seed == 0:
            lists = {"embcache": neighbours(kv), "gensim": neighbours(gensim_kv)}
        matched = {"sample": skipgram.subsample or 0, "alpha": sgns.lr, "min_alpha": sgns.min_lr}
        runs["gensim_matched"].append(run_gensim(cut, seed, args.threads, epochs=sgns.epochs, **matched)[0])
        load.append(os.getloadavg()[0])
        print(name, seed, {k: {m: round(v, 4) for m, v in r[-1].items() if m in (*SIMILARITY, "analogies")}
                           for k, r in runs.items()}, flush=True)
    storage = {"draws_epoch_bytes": table_bytes(store, name)}
    if not args.skip_stored_bytes:     # the same corpus as rows stored once (the default before issue 30)
        featurize_word2vec_flow(name, words, replace(skipgram, draws="stored"), 1, 0, store=store)
        storage["draws_stored_bytes"] = table_bytes(store, name)
    storage.update({k.replace("_bytes", "_bytes_per_token"): round(v / in_vocab, 3) for k, v in list(storage.items())})
    out = {k: summary(v) for k, v in runs.items()}
    e, g = out["embcache"], out["gensim_defaults"]
    return {"documents": len(texts), "corpus_tokens_in_vocab": in_vocab, "vocab_words": len(vocab) - 1,
            "load_avg_1min_per_round": [round(x, 2) for x in load],
            "featurize_s_per_seed": [round(r["featurize_s"], 2) for r in runs["embcache"]],   # later seeds: cached
            "storage": storage, "summary": out,
            "embcache_minus_gensim_defaults": {k: round(e[k]["mean"] - g[k]["mean"], 4)
                                               for k in (*SIMILARITY, "analogies")},
            "speed_ratio_corpus_words": round(e["corpus_words_per_s"]["mean"] / g["corpus_words_per_s"]["mean"], 2),
            "neighbours_seed0": lists, "per_seed": runs}


def neighbours_markdown(report: dict, names: list[str]) -> str:
    lines = []
    for name in names:
        lists = report[name]["neighbours_seed0"]
        lines += [f"\n{name}, seed 0, 10 nearest by cosine:\n", "| word | embcache (defaults) | gensim (defaults) |",
                  "|---|---|---|"]
        lines += [f"| {w} | {', '.join(lists['embcache'][w])} | {', '.join(lists['gensim'][w])} |" for w in PROBES]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("bbc", "bbc+wiki", "both"), default="both")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=int, default=None, help="only the first N documents (a smoke test)")
    parser.add_argument("--skip-stored-bytes", action="store_true",
                        help="do not featurize the stored-rows format for the bytes comparison")
    args = parser.parse_args()
    logging.getLogger("gensim").setLevel(logging.WARNING)
    from embcache.pipeline.configs import SGNSConfig, SkipGramConfig
    corpora = {"bbc": bbc, "bbc+wiki": bbc_and_wikipedia}
    names = list(corpora) if args.corpus == "both" else [args.corpus]
    report = {"setup": {"seeds": args.seeds, "threads": args.threads, "cpu_count": os.cpu_count(),
                        "machine": platform.machine(), "docs": args.docs,
                        "embcache_skipgram": repr(SkipGramConfig()), "embcache_sgns": repr(SGNSConfig()),
                        "gensim": f"Word2Vec(sg=1, negative=5, window=5, vector_size=100, min_count=5, "
                                  f"epochs={GENSIM_EPOCHS}), sample 1e-3, alpha 0.025, simple_preprocess"}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            report[name] = bench_corpus(name.replace("+", "_"), corpora[name]()[:args.docs], args, Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"word2vec_flow-{args.corpus}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v if k == "setup" else {m: v[m] for m in ("storage", "summary", "embcache_minus_gensim_defaults",
                                                                   "speed_ratio_corpus_words")}
                      for k, v in report.items()}, indent=2))
    print(neighbours_markdown(report, names))


if __name__ == "__main__":
    main()

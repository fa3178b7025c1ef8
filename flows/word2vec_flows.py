"""Prefect flows for word2vec: vocabulary + cached examples (a task per shard), training from the cache."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ..pipeline.cores import available_cores
from ..pipeline.sgns import SGNSConfig
from ..pipeline.skipgram import SkipGramConfig
from ..pipeline.words import WordConfig
from ..storage import FeatureStore

from . import progress, runners
from .retry import retryable
from .run_config import DEFAULT_STORE, Word2VecSection
from ..stages import word2vec as w2v
from ..stages import planning


@task(name="w2v-vocabulary", cache_policy=NO_CACHE)
def vocab_task(store: str, corpus: str, words: WordConfig, extend: bool, keep: bool = False) -> dict:
    return w2v.build_vocab(store, corpus, words, extend, keep)


@task(name="w2v-examples-shard", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retryable)
def examples_task(plan: w2v.ExamplesPlan, keys: list[str], total: int) -> int:
    rows = w2v.examples_shard(plan, keys)
    progress.advance("examples", len(keys), total)
    return rows


@flow(name="featurize-word2vec")
def featurize_word2vec_flow(corpus: str, words: WordConfig = WordConfig(),
                            skipgram: SkipGramConfig = SkipGramConfig(), epochs_of_examples: int = Word2VecSection.epochs_of_examples,
                            seed: int = Word2VecSection.seed, extend: bool = False, store: str = DEFAULT_STORE,
                            shard_docs: int = w2v.ExamplesConfig.shard_docs, workers: int | None = None, keep_vocabulary: bool = False) -> dict:
    """Build (or extend, or keep) the vocabulary, then precompute skip-gram examples for missing documents.

    keep_vocabulary: reuse the corpus's vocabulary when it has one built with `words`, so
    that new documents are the only ones computed (w2v.build_vocab).

    `workers` shard tasks run at once (threads: sampling and Parquet encoding release the
    GIL); None = the cores this process may use. Each holds one shard's rows in memory.
    On a Dask task runner (flows/runners.py) the cluster's threads set it instead.
    """
    log = get_run_logger()
    vocab = vocab_task(store, corpus, words, extend, keep_vocabulary)
    log.info("vocabulary v%d: %d words (%d new)", vocab["version"], vocab["words"], vocab["added_words"])
    config = w2v.ExamplesConfig(words, skipgram, epochs_of_examples, seed, shard_docs)
    plan = w2v.plan_examples(store, corpus, vocab["fingerprint"], config)
    fs, table = w2v.examples_table(plan)
    wanted = planning.snapshot_keys(fs, corpus)
    todo = planning.todo(table, w2v.documents_of(fs, corpus), wanted)   # documents' storage order: local reads
    shards = planning.KeyBatches(todo, shard_docs)
    log.info("examples: %d of %d documents cached, computing %d in %d shards", len(wanted) - len(todo),
             len(wanted), len(todo), len(shards))
    # at most `workers` shards in flight on threads; on Dask, enough for every worker thread
    rows = sum(runners.map_shards(examples_task, plan, shards, len(todo), "examples", workers or available_cores()))
    if not table.exists():
        table.create()
    fs.corpus(corpus).link("w2v_examples", table.fingerprint)
    return {"vocab": vocab, "examples_fingerprint": table.fingerprint, "documents": len(wanted),
            "computed": len(todo), "cached": len(wanted) - len(todo), "rows": rows}


@task(name="w2v-train", cache_policy=NO_CACHE)
def train_task(store: str, corpus: str, examples_fp: str, vocab_fp: str, config: SGNSConfig, seed: int,
               freeze_existing: bool, finetune_lr_scale: float) -> dict:
    return asdict(w2v.train_vectors(store, corpus, examples_fp, vocab_fp, config, seed, freeze_existing,
                                    finetune_lr_scale))


@flow(name="train-word2vec")
def train_word2vec_flow(corpus: str, config: SGNSConfig = SGNSConfig(), seed: int = Word2VecSection.seed,
                        freeze_existing: bool = False, finetune_lr_scale: float = 0.0,
                        store: str = DEFAULT_STORE) -> dict:
    """Skip-gram with negative sampling, reading only the cached examples of the corpus."""
    fs = FeatureStore(store)
    examples_fp = fs.resolve_linked(corpus, "w2v_examples")
    vocab_fp = fs.open("w2v_examples", examples_fp).saved_spec()["spec"]["inputs"]["w2v_vocab"]
    result = train_task(store, corpus, examples_fp, vocab_fp, config, seed, freeze_existing, finetune_lr_scale)
    get_run_logger().info("word_vectors@%s: %d words, %d examples, %.0f pairs/s", result["fingerprint"][:12],
                          result["words"], result["examples"], result["pairs_per_s"])
    return result

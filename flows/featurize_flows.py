"""Prefect flows for ingest and BERT featurization: plan, one task per shard, commit.

Tasks are thin wrappers of stages/ingest.py and stages/bert.py and pass references
(the plan, lists of text hashes), never tensors. The store is the cache, so Prefect's
own task caching is off.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ..pipeline.decoding import chosen_encodings, describe, summarize
from ..pipeline.encode import EncodeConfig
from ..pipeline.ingest import IngestConfig, Source
from ..pipeline.tokenize import TokenizeConfig
from ..storage import FeatureStore

from ..stages import bert, planning
from . import progress, runners
from .retry import retryable
from .run_config import DEFAULT_STORE
from ..stages.ingest import IngestSummary, ingest_corpus


@task(name="ingest-sources", cache_policy=NO_CACHE)
def ingest_task(store_root: str, corpus: str, sources: list[Source], config: IngestConfig) -> IngestSummary:
    """The stage's summary, with what an encoding="auto" source's files read this time were read as
    (files unchanged since the last ingest are not read)."""
    with chosen_encodings() as chosen:
        summary = ingest_corpus(store_root, corpus, sources, config,
                                progress=lambda n: progress.advance("ingest", n, 0))
    return replace(summary, encodings=summarize(chosen))


@flow(name="ingest")
def ingest_flow(corpus: str, sources: list[Source], config: IngestConfig = IngestConfig(),
                store: str = DEFAULT_STORE) -> IngestSummary:
    """Read the sources into a new snapshot of `corpus`; bad rows go to the `rejected` table."""
    result = ingest_task(store, corpus, sources, config)
    log = get_run_logger()
    log.info("corpus %s snapshot %s: %d documents (%d new texts), %d rejected %s", corpus,
             result.snapshot, result.documents, result.new_texts, result.rejected_total, result.rejected or "")
    if result.encodings:
        log.info("encoding auto: %s", describe(result.encodings))
    return result


@task(name="tokenize-shard", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retryable)
def tokenize_task(plan: bert.BertPlan, keys: list[str], total: int) -> int:
    rows = bert.tokenize_shard(plan, keys)
    progress.advance("tokenize", len(keys), total)
    return rows


@task(name="encode-shard", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retryable)
def encode_task(plan: bert.BertPlan, keys: list[str], total: int) -> int:
    rows = bert.encode_shard(plan, keys)
    progress.advance("encode", len(keys), total)
    return rows


@flow(name="featurize-bert")
def featurize_bert_flow(corpus: str, model: str | None = None, tokenize: TokenizeConfig = TokenizeConfig(),
                        encode: EncodeConfig = EncodeConfig(), store: str = DEFAULT_STORE,
                        encode_shard_docs: int = bert.BertConfig.encode_shard_docs,
                        tokenize_shard_docs: int = bert.BertConfig.tokenize_shard_docs) -> bert.BertFeaturized:
    """Tokenize and encode the corpus's current documents that the store does not have yet."""
    log = get_run_logger()
    config = bert.BertConfig(model, tokenize, encode, tokenize_shard_docs, encode_shard_docs)
    normalization = FeatureStore(store).corpus(corpus).snapshot().stats.get("normalization", "NFC")
    plan = bert.plan_bert(store, config, normalization)
    fs, documents_table, tokens, features = bert.tables(plan)
    docs = fs.corpus(corpus).read(columns=["text_sha"])
    wanted = pc.unique(docs["text_sha"])                 # Arrow, not 10^6 Python strings
    documents = docs.num_rows
    del docs
    counts: dict[str, bert.Counts] = {}
    for stage, table, source, fn, size in (("tokenize", tokens, documents_table, tokenize_task, tokenize_shard_docs),
                                           ("encode", features, tokens, encode_task, encode_shard_docs)):
        todo = planning.todo(table, source, wanted)     # in the order `source` stores them: local reads
        shards = planning.KeyBatches(todo, size)
        log.info("%s: %d of %d texts cached, computing %d in %d shards", stage, len(wanted) - len(todo),
                 len(wanted), len(todo), len(shards))
        done = sum(runners.map_shards(fn, plan, shards, len(todo), stage))   # one after another, or on Dask
        counts[stage] = bert.Counts(done, len(wanted) - len(todo), len(todo) - done)   # dropped: another run was first
        if counts[stage].dropped:
            log.warning("%s: %d texts were computed here too, but another run committed them first: its rows "
                        "are kept, these were dropped", stage, counts[stage].dropped)
        fs.corpus(corpus).link(table.name, table.fingerprint)
    cut = bert.truncation(store, corpus, tokens.fingerprint)       # of the distinct texts, cut at max_length
    if cut.get("split"):
        log.info("%d of %d texts were split into %d windows", cut["split"], len(wanted),
                 cut["windows"] - len(wanted) + cut["split"])
    if cut["truncated"]:
        log.info("%d of %d texts were cut %s", cut["truncated"], len(wanted), f"after {tokenize.max_windows} "
                 f"windows" if "split" in cut else f"at {cut['max_length']} tokens")
    return bert.BertFeaturized(documents, len(wanted), counts["tokenize"], counts["encode"], tokens.fingerprint,
                               features.fingerprint, plan.model_path, cut["truncated"], cut["max_length"],
                               cut["model_limit"], cut.get("split"), cut.get("windows"),
                               bert.encoder_summary(plan))   # device, precision, backend (auto: as measured)

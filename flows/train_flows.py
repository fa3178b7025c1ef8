"""Prefect flows for the training stages: linear head, static classifier, prediction.

Each reads the cache only; `predict` first runs featurize-bert with the head's own
settings, which computes features for the documents the store lacks and no others.
"""

from __future__ import annotations

# torch's first optimizer imports torch._dynamo (1-5 s here, pipeline.heads.torch_startup): imported
# with these flows, it loads while the CLI's Prefect server starts (cli/app.py prefect_api), not
# inside the first training.
import torch._dynamo  # noqa: F401
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ..pipeline.encode import EncodeConfig
from ..pipeline.finetune import FinetuneConfig
from ..pipeline.head_format import HeadMismatch
from ..pipeline.heads import HeadConfig
from ..pipeline.static import StaticConfig
from ..pipeline.tokenize import TokenizeConfig
from ..pipeline.words import WordConfig
from ..storage import FeatureStore

from ..stages import bert, compare, heads, static as static_clf
from . import progress
from .featurize_flows import featurize_bert_flow
from .run_config import DEFAULT_STORE, CompareSection, HeadSection, RunConfig, StaticSection


@task(name="train-head", cache_policy=NO_CACHE)
def train_head_task(store: str, corpus: str, name: str, config: HeadConfig, split_seed: int) -> dict:
    return heads.train(store, corpus, name, config, split_seed=split_seed)


@flow(name="train-head")
def train_head_flow(corpus: str, name: str = HeadSection.name, config: HeadConfig = HeadConfig(),
                    split_seed: int = HeadSection.split_seed,
                    store: str = DEFAULT_STORE) -> dict:
    """A linear head on the corpus's cached bert_features (no encoder pass)."""
    r = train_head_task(store, corpus, name, config, split_seed)
    test = r["metrics"].get("test", {})
    get_run_logger().info("head %s: test accuracy %s, macro-F1 %s, %.2f s training", name,
                          test.get("accuracy"), test.get("macro_f1"), r["train_seconds"])
    return r


@task(name="evaluate-head", cache_policy=NO_CACHE)
def evaluate_head_task(store: str, name: str, corpus: str | None) -> dict:
    return heads.evaluate(store, name, corpus)


@flow(name="evaluate-head")
def evaluate_head_flow(name: str = HeadSection.name, corpus: str | None = None, store: str = DEFAULT_STORE) -> dict:
    """Metrics of a saved head on a labelled corpus (its own test split by default).

    Another corpus is featurized first with the head's own settings (only what the store lacks).
    """
    if corpus is not None:
        features_for_head(corpus, name, store)
    return evaluate_head_task(store, name, corpus)


@task(name="predict-head", cache_policy=NO_CACHE)
def predict_task(store: str, corpus: str, name: str, features_fp: str) -> dict:
    return heads.predict(store, corpus, name, features_fp)


def features_for_head(corpus: str, head: str, store: str) -> bert.BertFeaturized:
    """Featurize what the store lacks of `corpus` with the head's own settings; featurize_bert_flow's result."""
    files, info = FeatureStore(store).models.get(heads.HEAD_KIND, head)
    _, meta = heads.head_from_bytes(files)
    made = meta["featurize"]
    feats = featurize_bert_flow(corpus, made["model"], TokenizeConfig(**made["tokenize"]),
                                EncodeConfig(**made["encode"]), store=store)
    if feats.features_fingerprint != meta["feature_fingerprint"]:
        raise HeadMismatch(f"head {head}", f"features of corpus {corpus} have fingerprint "
                                           f"{feats.features_fingerprint[:12]}, the head was trained on "
                                           f"{meta['feature_fingerprint'][:12]} (another documents table?)")
    return feats


@flow(name="predict")
def predict_flow(corpus: str, head: str = HeadSection.name, store: str = DEFAULT_STORE) -> dict:
    """Featurize what the store lacks with the head's own settings, then predict every document."""
    feats = features_for_head(corpus, head, store)
    r = predict_task(store, corpus, head, feats.features_fingerprint)
    r.update(encoded=feats.encode.computed, cached=feats.encode.cached)
    get_run_logger().info("predict %s with head %s: %d documents (%d encoded now, %d from the cache)", corpus,
                          head, r["documents"], r["encoded"], r["cached"])
    return r


@task(name="train-static", cache_policy=NO_CACHE)
def train_static_task(store: str, corpus: str, name: str, vectors: str, config: StaticConfig,
                      words: WordConfig, vectors_format: str, split_seed: int) -> dict:
    return static_clf.train(store, corpus, name, vectors, config, words, vectors_format, split_seed)


@flow(name="train-static")
def train_static_flow(corpus: str, name: str = StaticSection.name, vectors: str = StaticSection.vectors,
                      config: StaticConfig = StaticConfig(), words: WordConfig = WordConfig(min_count=1),
                      vectors_format: str = StaticSection.vectors_format, split_seed: int = StaticSection.split_seed,
                      store: str = DEFAULT_STORE) -> dict:
    """A classifier on pretrained static vectors where only the chosen rows train."""
    r = train_static_task(store, corpus, name, vectors, config, words, vectors_format, split_seed)
    get_run_logger().info("static %s (%s rows trainable: %d of %d): test accuracy %s", name, config.trainable,
                          r["trainable_rows"], r["rows"], r["metrics"].get("test", {}).get("accuracy"))
    return r


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(store: str, corpus: str, name: str, model_path: str, features_fp: str, tokens_fp: str,
                  config: FinetuneConfig, split_seed: int, resume: bool) -> dict:
    from ..stages import finetune
    return finetune.run(store, corpus, name, model_path, features_fp, tokens_fp, config, split_seed, resume,
                        on_step=lambda n, total: progress.advance("fine-tune", n, total))


@flow(name="finetune")
def finetune_flow(corpus: str, name: str = "finetuned", model: str | None = None, max_length: int = TokenizeConfig.max_length,
                  config: FinetuneConfig = FinetuneConfig(), split_seed: int = HeadSection.split_seed, resume: bool = True,
                  store: str = DEFAULT_STORE) -> dict:
    """Freeze-then-unfreeze fine-tuning: phase 1 on cached pooler vectors, phase 2 on cached token ids.

    Featurizes with pooling "pooler" first (only what the store lacks), never normalised: phase 1
    feeds these vectors to the classifier as phase 2's forward pass does; the corpus's default
    bert_features (what `train head` reads) stay what they were.
    """
    fs = FeatureStore(store)
    links = fs.corpus(corpus).manifest().links.get("bert_features", [])
    feats = featurize_bert_flow(corpus, model, TokenizeConfig(max_length=max_length),
                                EncodeConfig(pooling="pooler", normalize="none", device=config.device), store=store)
    if links and links[-1] != feats.features_fingerprint:
        fs.corpus(corpus).link("bert_features", links[-1])          # keep the user's default features
    r = finetune_task(store, corpus, name, feats.model, feats.features_fingerprint,
                      feats.tokens_fingerprint, config, split_seed, resume)
    r.update(features_fingerprint=feats.features_fingerprint, encoded=feats.encode.computed)
    get_run_logger().info("finetune %s: test accuracy %s (phase 1 alone: %s), %.1f s phase 2%s", name,
                          r["metrics"].get("test", {}).get("accuracy"),
                          r["phase1_metrics"].get("test", {}).get("accuracy"), r["phase2_seconds"],
                          " (resumed)" if r["resumed"] else "")
    return r


@task(name="encode-cost", cache_policy=NO_CACHE)
def encode_cost_task(store: str, corpus: str, features_fp: str) -> float:
    return compare.encode_cost_ms(store, corpus, features_fp)


@flow(name="compare")
def compare_flow(corpus: str, vectors: str = StaticSection.vectors, trainable: tuple[str, ...] = CompareSection.trainable,
                 finetune_config: FinetuneConfig | None = RunConfig.finetune, model: str | None = None,
                 max_length: int = TokenizeConfig.max_length, split_seed: int = HeadSection.split_seed,
                 store: str = DEFAULT_STORE) -> dict:
    """The three ways to put embeddings into a classifier, on one split: a table of numbers.

    finetune_config None leaves out the two fine-tuning rows (they encode the corpus again,
    with pooler pooling, and run the encoder's backward pass: minutes on a CPU).
    """
    log = get_run_logger()
    feats = featurize_bert_flow(corpus, model, TokenizeConfig(max_length=max_length), EncodeConfig(), store=store)
    encode_ms = encode_cost_task(store, corpus, feats.features_fingerprint)
    head = train_head_task(store, corpus, "compare_head", HeadConfig(), split_seed)
    rows = [compare.head_row(head, feats, encode_ms, model)]
    for mode in trainable:
        r = train_static_task(store, corpus, f"compare_static_{mode}", vectors, StaticConfig(trainable=mode),
                              WordConfig(min_count=1), "auto", split_seed)
        rows.append(compare.static_row(r, vectors, mode))
    if finetune_config is not None:
        progress.say(compare.finetune_estimate(feats.texts, encode_ms, finetune_config))
        ft = finetune_flow(corpus, "compare_finetuned", model, max_length, finetune_config, split_seed, store=store)
        rows.extend(compare.finetune_rows(ft, finetune_config, encode_ms))
    report = compare.write_report(FeatureStore(store), corpus, head, split_seed, rows)
    log.info("compare %s: %s", corpus, "; ".join(f"{r['approach']}: {r['accuracy']}" for r in rows))
    return report

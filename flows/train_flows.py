"""Prefect flows for the training stages: linear head, static classifier, prediction.

Each reads the cache only; `predict` first runs featurize-bert with the head's own
settings, which computes features for the documents the store lacks and no others.
"""

from __future__ import annotations

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

from ..stages import heads, static as static_clf
from .featurize_flows import featurize_bert_flow


@task(name="train-head", cache_policy=NO_CACHE)
def train_head_task(store: str, corpus: str, name: str, config: HeadConfig, split_seed: int) -> dict:
    return heads.train(store, corpus, name, config, split_seed=split_seed)


@flow(name="train-head")
def train_head_flow(corpus: str, name: str = "head", config: HeadConfig = HeadConfig(), split_seed: int = 0,
                    store: str = "./embcache-store") -> dict:
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
def evaluate_head_flow(name: str = "head", corpus: str | None = None, store: str = "./embcache-store") -> dict:
    """Metrics of a saved head on a labelled corpus (its own test split by default)."""
    return evaluate_head_task(store, name, corpus)


@task(name="predict-head", cache_policy=NO_CACHE)
def predict_task(store: str, corpus: str, name: str, features_fp: str) -> dict:
    return heads.predict(store, corpus, name, features_fp)


@flow(name="predict")
def predict_flow(corpus: str, head: str = "head", store: str = "./embcache-store") -> dict:
    """Featurize what the store lacks with the head's own settings, then predict every document."""
    fs = FeatureStore(store)
    files, info = fs.models.get(heads.HEAD_KIND, head)
    _, meta = heads.head_from_bytes(files)
    made = meta["featurize"]
    feats = featurize_bert_flow(corpus, made["model"], TokenizeConfig(**made["tokenize"]),
                                EncodeConfig(**made["encode"]), store=store)
    if feats["features_fingerprint"] != meta["feature_fingerprint"]:
        raise HeadMismatch(f"head {head}", f"features of corpus {corpus} have fingerprint "
                                           f"{feats['features_fingerprint'][:12]}, the head was trained on "
                                           f"{meta['feature_fingerprint'][:12]} (another documents table?)")
    r = predict_task(store, corpus, head, feats["features_fingerprint"])
    r.update(encoded=feats["encode_computed"], cached=feats["encode_cached"])
    get_run_logger().info("predict %s with head %s: %d documents (%d encoded now, %d from the cache)", corpus,
                          head, r["documents"], r["encoded"], r["cached"])
    return r


@task(name="train-static", cache_policy=NO_CACHE)
def train_static_task(store: str, corpus: str, name: str, vectors: str, config: StaticConfig,
                      words: WordConfig, vectors_format: str, split_seed: int) -> dict:
    return static_clf.train(store, corpus, name, vectors, config, words, vectors_format, split_seed)


@flow(name="train-static")
def train_static_flow(corpus: str, name: str = "static", vectors: str = "glove-6b-50d",
                      config: StaticConfig = StaticConfig(), words: WordConfig = WordConfig(min_count=1),
                      vectors_format: str = "auto", split_seed: int = 0, store: str = "./embcache-store") -> dict:
    """A classifier on pretrained static vectors where only the chosen rows train."""
    r = train_static_task(store, corpus, name, vectors, config, words, vectors_format, split_seed)
    get_run_logger().info("static %s (%s rows trainable: %d of %d): test accuracy %s", name, config.trainable,
                          r["trainable_rows"], r["rows"], r["metrics"].get("test", {}).get("accuracy"))
    return r


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(store: str, corpus: str, name: str, model_path: str, features_fp: str, tokens_fp: str,
                  config: FinetuneConfig, split_seed: int, resume: bool) -> dict:
    from ..stages import finetune
    return finetune.run(store, corpus, name, model_path, features_fp, tokens_fp, config, split_seed, resume)


@flow(name="finetune")
def finetune_flow(corpus: str, name: str = "finetuned", model: str | None = None, max_length: int = 256,
                  config: FinetuneConfig = FinetuneConfig(), split_seed: int = 0, resume: bool = True,
                  store: str = "./embcache-store") -> dict:
    """Freeze-then-unfreeze fine-tuning: phase 1 on cached pooler vectors, phase 2 on cached token ids.

    Featurizes with pooling "pooler" first (only what the store lacks); the corpus's default
    bert_features (what `train head` reads) stay what they were.
    """
    fs = FeatureStore(store)
    links = fs.corpus(corpus).manifest().links.get("bert_features", [])
    feats = featurize_bert_flow(corpus, model, TokenizeConfig(max_length=max_length),
                                EncodeConfig(pooling="pooler"), store=store)
    if links and links[-1] != feats["features_fingerprint"]:
        fs.corpus(corpus).link("bert_features", links[-1])          # keep the user's default features
    r = finetune_task(store, corpus, name, feats["model"], feats["features_fingerprint"],
                      feats["tokens_fingerprint"], config, split_seed, resume)
    r.update(features_fingerprint=feats["features_fingerprint"], encoded=feats["encode_computed"])
    get_run_logger().info("finetune %s: test accuracy %s (phase 1 alone: %s), %.1f s phase 2%s", name,
                          r["metrics"].get("test", {}).get("accuracy"),
                          r["phase1_metrics"].get("test", {}).get("accuracy"), r["phase2_seconds"],
                          " (resumed)" if r["resumed"] else "")
    return r


def _per_doc_ms(seconds: float, n: int) -> float:
    return round(1000.0 * seconds / max(n, 1), 4)


@task(name="encode-cost", cache_policy=NO_CACHE)
def encode_cost_task(store: str, corpus: str, features_fp: str, sample: int = 64) -> float:
    """Milliseconds per document to encode a new document (a sample of the corpus, timed)."""
    import time
    from ..stages import bert
    fs = FeatureStore(store)
    meta = fs.open("bert_features", features_fp).saved_spec()["meta"]
    keys = fs.corpus(corpus).read(columns=["text_sha"])["text_sha"].to_pylist()[:sample]
    texts = fs.open("documents", fs.resolve_linked(corpus, "documents")).lookup(sorted(set(keys)), ["text"])
    start = time.perf_counter()
    texts = texts["text"].to_pylist()
    bert.encode_query(meta, texts[:1])                                # load the model untimed
    bert.encode_query(meta, texts)
    return _per_doc_ms(time.perf_counter() - start, len(texts))


@flow(name="compare")
def compare_flow(corpus: str, vectors: str = "glove-6b-50d", trainable: tuple[str, ...] = ("oov", "none", "all"),
                 finetune_config: FinetuneConfig | None = FinetuneConfig(freeze_epochs=3, unfreeze_epochs=1,
                                                                         unfreeze_layers=2),
                 model: str | None = None, max_length: int = 256, split_seed: int = 0,
                 store: str = "./embcache-store") -> dict:
    """The three ways to put embeddings into a classifier, on one split: a table of numbers.

    finetune_config None leaves out the two fine-tuning rows (they encode the corpus again,
    with pooler pooling, and run the encoder's backward pass: minutes on a CPU).
    """
    log = get_run_logger()
    fs = FeatureStore(store)
    feats = featurize_bert_flow(corpus, model, TokenizeConfig(max_length=max_length), EncodeConfig(), store=store)
    encode_ms = encode_cost_task(store, corpus, feats["features_fingerprint"])
    rows = []
    head = train_head_task(store, corpus, "compare_head", HeadConfig(), split_seed)
    n_test = sum(map(sum, head["metrics"]["test"]["confusion_matrix"]))
    rows.append({"approach": "linear head on cached MiniLM features" if model is None else
                 "linear head on cached BERT features", **_scores(head),
                 "train_seconds": round(head["train_seconds"], 2),
                 "inference_ms_per_doc": {"cached_features": _per_doc_ms(head["read_seconds"], head["documents"]),
                                          "new_document": encode_ms},
                 "cached": f"bert_features ({feats['encode_cached']:,} of {feats['texts']:,} texts)",
                 "recomputed": f"{feats['encode_computed']:,} texts encoded"})
    for mode in trainable:
        name = f"compare_static_{mode}"
        r = train_static_task(store, corpus, name, vectors, StaticConfig(trainable=mode), WordConfig(min_count=1),
                              "auto", split_seed)
        rows.append({"approach": f"{vectors} mean-pooled, {mode} rows trainable ({r['trainable_rows']:,} of "
                                 f"{r['rows']:,})", **_scores(r),
                     "train_seconds": round(r["train_seconds"], 2),
                     "inference_ms_per_doc": {"new_document": r["inference_ms_per_doc"]},
                     "cached": "word_tokens, static_ids", "recomputed": "nothing (token ids from the store)"})
    if finetune_config is not None:
        rows.extend(_finetune_rows(corpus, model, max_length, finetune_config, split_seed, store, encode_ms))
    report = {"corpus": corpus, "test_documents": int(n_test), "split_seed": split_seed, "rows": rows}
    _write_compare(fs, corpus, report)
    log.info("compare %s: %s", corpus, "; ".join(f"{r['approach']}: {r['accuracy']}" for r in rows))
    return report


def _finetune_rows(corpus: str, model: str | None, max_length: int, finetune_config: FinetuneConfig,
                   split_seed: int, store: str, encode_ms: float) -> list[dict]:
    ft = finetune_flow(corpus, "compare_finetuned", model, max_length, finetune_config, split_seed, store=store)
    phase1 = {"approach": "phase 1 only: BERT head on cached pooler features (encoder frozen)",
              **_scores({"metrics": ft["phase1_metrics"]}), "train_seconds": round(ft["phase1_seconds"], 2),
              "inference_ms_per_doc": {"new_document": encode_ms},
              "cached": "bert_features (pooler)", "recomputed": "no encoder pass"}
    tuned = {"approach": f"fine-tuned BERT (top {finetune_config.unfreeze_layers or 'all'} layers, "
                         f"{finetune_config.unfreeze_epochs} epoch(s))", **_scores(ft),
             "train_seconds": round(ft["phase1_seconds"] + ft["phase2_seconds"], 2),
             "inference_ms_per_doc": {"new_document": _per_doc_ms(ft["test_inference_seconds"],
                                                                  ft["test_documents"])},
             "cached": "bert_tokens (token ids), bert_features (phase 1)",
             "recomputed": "encoder forward + backward every step of phase 2"}
    return [phase1, tuned]


def _scores(r: dict) -> dict:
    test = r["metrics"].get("test", {})
    return {"accuracy": round(test.get("accuracy", float("nan")), 4),
            "macro_f1": round(test.get("macro_f1", float("nan")), 4)}


def _write_compare(fs: FeatureStore, corpus: str, report: dict) -> None:
    import json
    lines = [f"# {corpus}: contextual vs static embeddings ({report['test_documents']} test documents)", "",
             "| approach | accuracy | macro-F1 | training s | inference ms/doc | cached | recomputed |",
             "|---|---:|---:|---:|---|---|---|"]
    for r in report["rows"]:
        cost = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["inference_ms_per_doc"].items())
        lines.append(f"| {r['approach']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['train_seconds']} | "
                     f"{cost} | {r['cached']} | {r['recomputed']} |")
    fs.fs.write_atomic(fs.fs.path("reports", f"compare-{corpus}.md"), ("\n".join(lines) + "\n").encode())
    fs.fs.write_atomic(fs.fs.path("reports", f"compare-{corpus}.json"), json.dumps(report, indent=1).encode())
    report["markdown"] = "\n".join(lines)

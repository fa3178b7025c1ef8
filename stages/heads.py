"""Linear heads on cached BERT features, as units of work over the store (flows wrap these).

    bert_features ⨝ corpus labels ──train_head──▶ models/head/<name> + predictions
    new corpus ──featurize (missing rows only)──▶ bert_features ──predict──▶ predictions

A head is saved with the fingerprint of the features it was trained on and the
featurize settings that produced them, so `predict` recomputes features with exactly
those settings (only for documents the store lacks) and refuses any other features.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from ..pipeline.head_format import FORMAT_VERSION as HEAD_FORMAT, head_from_bytes, head_to_bytes
from ..pipeline.heads import HeadConfig, predict_proba, train_head
from ..pipeline.errors import PipelineError
from ..pipeline.splits import LabelSet, classification_metrics
from ..storage import FeatureStore
from ..storage.query import as_matrix

from .classify import labelled, metrics, predictions_table, unique_rows
from .stage import Stage

HEAD_KIND = "head"
PREDICTIONS = Stage("predictions", 1)   # write_predictions
TRAIN_HEAD = Stage("train-head", 1)     # train: a head saved in the models registry


def identity(features_fp: str, snapshot_sha: str, config: HeadConfig, split_seed: int) -> str:
    """What train's result depends on: the run ledger skips the stage while this is unchanged."""
    return TRAIN_HEAD.identity(config, features=features_fp, snapshot=snapshot_sha, split_seed=split_seed,
                               format=HEAD_FORMAT, predictions=PREDICTIONS.version)


def vectors_for(store: FeatureStore, table: str, fingerprint: str, keys: list[str]) -> np.ndarray:
    """(N, H) float32 feature rows for `keys` (which may repeat), in that order."""
    uniq = sorted(set(keys))
    rows = store.open(table, fingerprint).lookup(uniq, ["vector"])
    matrix = as_matrix(rows["vector"], np.float32)                             # (U, H)
    index = {k: i for i, k in enumerate(uniq)}
    return matrix[np.fromiter((index[k] for k in keys), np.int64, len(keys))]


def train(store_root: str, corpus: str, name: str, config: HeadConfig = HeadConfig(),
          features_fp: str | None = None, split_seed: int = 0) -> dict:
    """Train head `name` on the corpus's labelled documents; save it; write their predictions.

    Times, in seconds: train_seconds, the training itself (pipeline.heads.HeadHistory.seconds:
    what `compare` reports for the same head); read_seconds, reading the feature rows;
    startup_seconds, torch's one-time costs in this process (0 when paid earlier)."""
    store = FeatureStore(store_root)
    fp = features_fp or store.resolve_linked(corpus, "bert_features")
    data = labelled(store, corpus, split_seed)
    keys = data.docs["text_sha"].to_pylist()
    start = time.perf_counter()
    x = vectors_for(store, "bert_features", fp, keys)                          # (N, H)
    read_s = time.perf_counter() - start
    tr, va = data.parts["train"], data.parts["validation"]
    head, history = train_head(x[tr], data.y[tr], x[va], data.y[va], len(data.labels), config)
    proba = predict_proba(head, x)                                             # (N, C)
    scores = {part: metrics(data, part, proba[data.parts[part]])
              for part in ("validation", "test") if len(data.parts[part])}
    features_meta = store.open("bert_features", fp).saved_spec()["meta"]
    meta = {"labels": list(data.labels.names), "feature_fingerprint": fp, "feature_table": "bert_features",
            "featurize": features_meta, "corpus": corpus, "snapshot": data.snapshot, "split_seed": split_seed,
            "split_sizes": {k: int(len(v)) for k, v in data.parts.items()}, "metrics": scores,
            "history": asdict(history), "read_seconds": round(read_s, 3)}
    info = store.models.put(HEAD_KIND, name, head_to_bytes(head, meta),
                            {"feature_fingerprint": fp, "corpus": corpus,
                             "test_accuracy": scores.get("test", {}).get("accuracy")})
    table = write_predictions(store, corpus, fp, info.version, data.labels, keys, proba)
    return {"name": name, "version": info.version, "feature_fingerprint": fp, "metrics": scores,
            "history": asdict(history), "train_seconds": history.seconds, "read_seconds": read_s,
            "startup_seconds": history.startup_seconds,
            "documents": len(keys), "unlabelled": data.unlabelled, "predictions": table}


def write_predictions(store: FeatureStore, corpus: str, features_fp: str, head_version: str,
                      labels: LabelSet, keys: list[str], proba: np.ndarray) -> str:
    """The `predictions` table (text_sha → label, probabilities) of one head on one feature table."""
    table = store.table("predictions", PREDICTIONS.spec({"kind": HEAD_KIND}, inputs={"bert_features": features_fp,
                                                                                 "head": head_version}),
                        meta={"labels": list(labels.names)})
    rows = unique_rows(keys)
    missing = set(table.missing([keys[i] for i in rows]).to_pylist())
    todo = [i for i in rows if keys[i] in missing]
    if todo:
        table.write(predictions_table([keys[i] for i in todo], labels, proba[todo]))
    elif not table.exists():
        table.create()
    store.corpus(corpus).link("predictions", table.fingerprint)
    return table.fingerprint


def load(store: FeatureStore, name: str, features_fp: str | None = None):
    """(head, head.json meta, model info); HeadMismatch when features_fp is not the head's."""
    files, info = store.models.get(HEAD_KIND, name)
    head, meta = head_from_bytes(files, features_fp)
    return head, meta, info


def evaluate(store_root: str, name: str, corpus: str | None = None, split_seed: int | None = None) -> dict:
    """Metrics of head `name` on a labelled corpus (default: the one it was trained on, its test split).

    The corpus's features must be the ones the head was trained on (same fingerprint).
    """
    store = FeatureStore(store_root)
    corpus = corpus or store.models.info(HEAD_KIND, name).meta["corpus"]
    fp = store.resolve_linked(corpus, "bert_features")
    head, meta, info = load(store, name, fp)
    data = labelled(store, corpus, meta["split_seed"] if split_seed is None else split_seed)
    unknown = sorted(set(data.labels.names) - set(meta["labels"]))
    if unknown:
        raise PipelineError(f"corpus {corpus}", f"labels {unknown} are not among the head's {meta['labels']}")
    x = vectors_for(store, "bert_features", fp, data.docs["text_sha"].to_pylist())
    order = [meta["labels"].index(n) for n in data.labels.names]      # head's classes -> corpus's label order
    proba = predict_proba(head, x)[:, order]
    own_test = corpus == meta["corpus"] and len(data.parts["test"])
    rows = data.parts["test"] if own_test else np.arange(len(data.y))
    result = classification_metrics(data.y[rows], proba[rows].argmax(1), list(data.labels.names))
    return {"name": name, "version": info.version, "corpus": corpus, "rows": "test split" if own_test else "all",
            "documents": int(len(rows)), "metrics": result}


def predict(store_root: str, corpus: str, name: str, features_fp: str) -> dict:
    """Predictions of head `name` for every document of the corpus (features must already be cached)."""
    store = FeatureStore(store_root)
    head, meta, info = load(store, name, features_fp)
    keys = store.corpus(corpus).read(columns=["text_sha"])["text_sha"].to_pylist()
    proba = predict_proba(head, vectors_for(store, "bert_features", features_fp, keys))
    labels = LabelSet(tuple(meta["labels"]))
    table = write_predictions(store, corpus, features_fp, info.version, labels, keys, proba)
    counts = dict(zip(*np.unique(np.asarray(labels.decode(proba.argmax(1)), dtype=object), return_counts=True)))
    return {"name": name, "version": info.version, "documents": len(keys), "predictions": table,
            "label_counts": {str(k): int(v) for k, v in counts.items()}}

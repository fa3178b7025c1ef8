"""BERT fine-tuning over the store: the frozen phase reads cached pooler vectors, the
unfrozen phase reads cached token ids; checkpoints go to models/checkpoint/<name>.

    bert_features (pooler) ──phase 1: head only──┐
    bert_tokens ───────────phase 2: top K layers──┴──▶ models/finetune/<name>

A checkpoint is tagged with the run's identity (model, data, split, config): a rerun
with the same identity resumes from the last one instead of starting over; any other
run ignores it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import numpy as np
from safetensors.torch import save as save_tensors

from ..pipeline.finetune import FinetuneConfig, finetune, predict_from_features, predict_logits, train_frozen_head
from ..pipeline.model import load_classifier
from ..storage import FeatureStore, fingerprint_of

from .classify import labelled, metrics
from .heads import vectors_for

FINETUNE_KIND = "finetune"
CHECKPOINT_KIND = "checkpoint"
FINETUNE_FORMAT, FINETUNE_VERSION = "embcache.finetuned", 1


def token_ids(store: FeatureStore, tokens_fp: str, keys: list[str]) -> list[np.ndarray]:
    """Each document's cached input_ids, in the order of `keys` (which may repeat)."""
    uniq = sorted(set(keys))
    rows = store.open("bert_tokens", tokens_fp).lookup(uniq, ["input_ids"])["input_ids"].to_pylist()
    index = dict(zip(uniq, rows))
    return [np.asarray(index[k], np.int64) for k in keys]


def run(store_root: str, corpus: str, name: str, model_path: str, features_fp: str, tokens_fp: str,
        config: FinetuneConfig = FinetuneConfig(), split_seed: int = 0, resume: bool = True,
        on_step=None) -> dict:
    """Phase 1 on cached pooler features, phase 2 on cached token ids; save the model and metrics.

    on_step(steps, total): phase 2's progress (pipeline.finetune.finetune)."""
    store = FeatureStore(store_root)
    data = labelled(store, corpus, split_seed)
    keys = data.docs["text_sha"].to_pylist()
    tr, va, te = data.parts["train"], data.parts["validation"], data.parts["test"]
    x = vectors_for(store, "bert_features", features_fp, keys)                 # (N, H) pooler vectors
    ids = token_ids(store, tokens_fp, keys)
    identity = fingerprint_of({"model": model_path, "features": features_fp, "tokens": tokens_fp,
                               "snapshot": data.snapshot, "split_seed": split_seed,
                               "config": {k: v for k, v in asdict(config).items()
                                          if k not in ("threads", "checkpoint_every", "device")}})
    model = load_classifier(model_path, len(data.labels), dict(enumerate(data.labels.names)))
    checkpoint = _checkpoint(store, name, identity) if resume else None
    frozen, phase1_scores = None, {}
    if checkpoint is None:                       # a phase-2 checkpoint holds the phase-1 head already
        frozen = train_frozen_head(model, x[tr], data.y[tr], config, val=(x[va], data.y[va]))
        phase1_scores = {p: metrics(data, p, predict_from_features(model, x[data.parts[p]]))
                         for p in ("validation", "test") if len(data.parts[p])}

    def keep(info, files: dict[str, bytes]) -> None:
        store.models.put(CHECKPOINT_KIND, name, files, {"run": identity, "epoch": info.epoch, "step": info.step,
                                                        "global_step": info.global_step})

    start = time.perf_counter()
    unfrozen = finetune(model, [ids[i] for i in tr], data.y[tr], config,
                        val=([ids[i] for i in va], data.y[va]), resume=checkpoint, on_checkpoint=keep,
                        on_step=on_step)
    phase2_s = time.perf_counter() - start
    start = time.perf_counter()
    logits = predict_logits(model, [ids[i] for i in te]) if len(te) else np.zeros((0, len(data.labels)))
    infer_s = time.perf_counter() - start
    scores = {"test": metrics(data, "test", logits)} if len(te) else {}
    meta = {"format": FINETUNE_FORMAT, "format_version": FINETUNE_VERSION, "labels": list(data.labels.names),
            "model": model_path, "features": features_fp, "tokens": tokens_fp, "corpus": corpus,
            "snapshot": data.snapshot, "split_seed": split_seed, "config": asdict(config),
            "metrics": scores, "phase1_metrics": phase1_scores, "resumed": checkpoint is not None}
    files = {"model.safetensors": save_tensors({k: v.detach().contiguous().cpu()
                                                for k, v in model.state_dict().items()}),
             "config.json": model.config.to_json_string().encode(),
             "finetune.json": json.dumps(meta, indent=1, sort_keys=True).encode()}
    info = store.models.put(FINETUNE_KIND, name, files, {"corpus": corpus, "run": identity,
                                                         "test_accuracy": scores.get("test", {}).get("accuracy")})
    return {"name": name, "version": info.version, "metrics": scores, "phase1_metrics": phase1_scores,
            "phase1": asdict(frozen) if frozen else None, "phase2": asdict(unfrozen),
            "phase1_seconds": sum(frozen.epoch_seconds) if frozen else 0.0, "phase2_seconds": phase2_s,
            "test_inference_seconds": infer_s, "test_documents": int(len(te)),
            "resumed": checkpoint is not None, "documents": len(keys)}


def _checkpoint(store: FeatureStore, name: str, identity: str) -> dict[str, bytes] | None:
    """The last checkpoint of this very run, if one was saved."""
    if not store.models.exists(CHECKPOINT_KIND, name):
        return None
    files, info = store.models.get(CHECKPOINT_KIND, name)
    return files if info.meta.get("run") == identity else None

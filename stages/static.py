"""Classifiers on pretrained static vectors, as units of work over the store (flows wrap these).

    documents ──tokenize──▶ word_tokens ──vocabulary of the train split──▶ static_ids ──train──▶ models/static/<name>

- `word_tokens` (key text_sha): each document's words (pipeline.words tokenizer), once per
  tokenizer config; every static classifier of every corpus reads them.
- `static_ids` (key text_sha): each document's rows in one vocabulary (pretrained
  vectors + the training split's words), so the variants of one comparison (trainable
  oov / special / all / none, mean / cnn) read the same ids.
- The vocabulary is built from every document of the corpus (it needs no labels):
  built from the training split only, a test word that GloVe has but no training
  text uses would become <unk> and lose its vector (about 5 points on BBC for the
  oov mode). OOV words seen only outside the training split get rows that no
  gradient reaches; they keep their random start.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..pipeline.static import FORMAT_VERSION, StaticConfig, build_model, build_vocab, predict_proba, static_to_bytes, train_static
from ..pipeline.vectors import load_vectors, vectors_digest
from ..pipeline.words import WordConfig, tokenize_words
from ..storage import FeatureStore

from .classify import labelled, metrics, unique_rows
from .stage import Stage

STATIC_KIND = "static"
TOKENS = Stage("word_tokens", 1)      # word_tokens
IDS = Stage("static_ids", 1)          # static_ids
TRAIN_STATIC = Stage("train-static", 1)   # train: a classifier saved in the models registry


def identity(documents_fp: str, snapshot_sha: str, vectors_spec: str, vectors_format: str, config: StaticConfig,
             split_seed: int) -> str:
    """What train's result depends on: the run ledger skips the stage while this is unchanged."""
    return TRAIN_STATIC.identity(config, documents=documents_fp, snapshot=snapshot_sha,
                                 vectors=vectors_identity(vectors_spec), vectors_format=vectors_format,
                                 split_seed=split_seed, format=FORMAT_VERSION)


def vectors_identity(spec: str) -> dict:
    """What a vectors spec points at: a file by size and mtime, a package or corpus by name."""
    path = Path(spec)
    if path.exists():
        st = path.stat()
        return {"file": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"spec": spec}


@functools.lru_cache(maxsize=2)
def vectors(store_root: str, spec_text: str, fmt: str = "auto") -> tuple[tuple[str, ...], np.ndarray, str]:
    """(words, (V, H) vectors, digest) for a --vectors SPEC: a file, "glove-6b-50d", or "word2vec:CORPUS"."""
    if spec_text.startswith("word2vec:"):
        from ..storage.query import as_matrix
        store = FeatureStore(store_root)
        corpus = spec_text.split(":", 1)[1]
        table = store.open("word_vectors", store.resolve_linked(corpus, "word_vectors")).read(["word", "id", "vector"])
        table = table.sort_by("id")
        words, matrix = tuple(table["word"].to_pylist()), as_matrix(table["vector"], np.float32)
    else:
        words, matrix = load_vectors(spec_text, fmt)
        words = tuple(words)
    return words, matrix, vectors_digest(words, matrix)


def word_tokens(store: FeatureStore, corpus: str, keys: list[str], config: WordConfig,
                shard_docs: int = 2048) -> tuple[dict[str, list[str]], str]:
    """({text_sha: words}, word_tokens fingerprint): tokenized once per config, cached in `word_tokens`."""
    docs_fp = store.resolve_linked(corpus, "documents")
    table = store.table("word_tokens", TOKENS.spec(config, inputs={"documents": docs_fp}))
    uniq = sorted(set(keys))
    todo = table.missing(uniq).to_pylist()
    docs = store.open("documents", docs_fp)
    for i in range(0, len(todo), shard_docs):
        part = todo[i:i + shard_docs]
        texts = docs.lookup(part, ["text"])["text"].to_pylist()
        table.write(pa.table({"text_sha": pa.array(part, pa.string()),
                              "words": pa.array(tokenize_words(texts, config), pa.list_(pa.string()))}))
    if not table.exists():
        table.create()
    rows = table.lookup(uniq, ["words"])["words"].to_pylist()
    return dict(zip(uniq, rows)), table.fingerprint


def static_ids(store: FeatureStore, keys: list[str], tokens: dict[str, list[str]], vocab,
               config: StaticConfig, tokens_fp: str) -> list[np.ndarray]:
    """Each document's rows (text_sha order of `keys`), cached in `static_ids` per vocabulary."""
    table = store.table("static_ids", IDS.spec({"max_tokens": config.max_tokens},
                                           inputs={"word_tokens": tokens_fp, "vocab": vocab.digest()}))
    uniq = sorted(set(keys))
    todo = table.missing(uniq).to_pylist()
    if todo:
        ids = vocab.encode([tokens[k] for k in todo], config.max_tokens)
        table.write(pa.table({"text_sha": pa.array(todo, pa.string()),
                              "ids": pa.array([a.tolist() for a in ids], pa.list_(pa.int32()))}))
    elif not table.exists():
        table.create()
    got = table.lookup(uniq, ["ids"])["ids"].to_pylist()
    index = dict(zip(uniq, got))
    return [np.asarray(index[k], np.int32) for k in keys]


def train(store_root: str, corpus: str, name: str, vectors_spec: str = "glove-6b-50d",
          config: StaticConfig = StaticConfig(), words: WordConfig = WordConfig(min_count=1),
          vectors_format: str = "auto", split_seed: int = 0) -> dict:
    """Train static classifier `name` on the corpus's labelled documents; save it in the store."""
    store = FeatureStore(store_root)
    data = labelled(store, corpus, split_seed)
    keys = data.docs["text_sha"].to_pylist()
    t0 = time.perf_counter()
    vocab_words, matrix, digest = vectors(store.root, vectors_spec, vectors_format)
    t1 = time.perf_counter()
    tokens, tokens_fp = word_tokens(store, corpus, keys, words)
    tr, va = data.parts["train"], data.parts["validation"]
    vocab = build_vocab([tokens[k] for k in sorted(set(keys))], vocab_words, config)
    ids = static_ids(store, keys, tokens, vocab, config, tokens_fp)
    t2 = time.perf_counter()
    model = build_model(vocab, vocab_words, matrix, len(data.labels), config)
    history = train_static(model, [ids[i] for i in tr], data.y[tr], [ids[i] for i in va], data.y[va], config)
    proba = predict_proba(model, ids)
    infer_ms = _inference_ms(store, corpus, model, vocab, config, words, [keys[i] for i in data.parts["test"]])
    scores = {part: metrics(data, part, proba[data.parts[part]])
              for part in ("validation", "test") if len(data.parts[part])}
    trainable = 0 if model.embedding.trainable is None else int(model.embedding.trainable.shape[0])
    meta = {"labels": list(data.labels.names), "vectors": vectors_spec, "vectors_digest": digest,
            "words": asdict(words), "corpus": corpus, "snapshot": data.snapshot, "split_seed": split_seed,
            "metrics": scores, "history": asdict(history), "rows": len(vocab), "trainable_rows": trainable}
    info = store.models.put(STATIC_KIND, name, static_to_bytes(model, vocab, meta),
                            {"vectors": vectors_spec, "corpus": corpus, "trainable": config.trainable,
                             "test_accuracy": scores.get("test", {}).get("accuracy")})
    return {"name": name, "version": info.version, "metrics": scores, "history": asdict(history),
            "train_seconds": history.seconds, "load_vectors_seconds": t1 - t0, "prepare_seconds": t2 - t1,
            "rows": len(vocab), "trainable_rows": trainable, "pretrained_rows": int(vocab.pretrained.sum()),
            "inference_ms_per_doc": infer_ms,
            "documents": len(keys), "unique_texts": int(len(unique_rows(keys)))}


def _inference_ms(store: FeatureStore, corpus: str, model, vocab, config: StaticConfig, words: WordConfig,
                  keys: list[str]) -> float:
    """What a new document costs: tokenize, map to rows, classify (timed on the test documents)."""
    if not keys:
        return float("nan")
    docs = store.open("documents", store.resolve_linked(corpus, "documents"))
    texts = docs.lookup(sorted(set(keys)), ["text"])["text"].to_pylist()
    start = time.perf_counter()
    predict_proba(model, vocab.encode(tokenize_words(texts, words), config.max_tokens))
    return round(1000.0 * (time.perf_counter() - start) / len(texts), 4)

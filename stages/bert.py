"""BERT featurization as units of work over the store (no Prefect here: flows wrap these).

A `BertPlan` names the two tables a run writes and how to compute them; it is small
and picklable, so tasks (threads, processes, Dask workers) get it by value and load
the model once per process.

    documents ──tokenize_shard──▶ bert_tokens ──encode_shard──▶ bert_features
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..pipeline.backends import onnx_model, resolve_backend
from ..pipeline.encode import EncodeConfig, encode_tokens
from ..pipeline.model import (load_model, load_tokenizer, max_positions, model_digest, resolve_model,
                              resolve_normalize)
from ..pipeline.tokenize import TokenizeConfig, tokenize
from ..storage import FeatureStore
from .stage import Stage

DOCUMENTS = Stage("documents", 1)        # text_sha -> text, as ingest normalized it
TOKENIZE = Stage("bert_tokens", 1)       # tokenize_shard
ENCODE = Stage("bert_features", 1)       # encode_shard


@dataclass(frozen=True)
class BertConfig:
    model: str | None = None              # HF id or local path; None = packaged MiniLM (else its hub id)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    tokenize_shard_docs: int = 4096       # documents per tokenize task (fast: big shards)
    encode_shard_docs: int = 512          # documents per encode task: ~3 s of MiniLM on 2 cores


@dataclass(frozen=True)
class BertPlan:
    store: str                            # store root (path or URL)
    model_path: str                       # resolved model path / hub id
    tokenize: TokenizeConfig
    encode: EncodeConfig
    documents_spec: dict
    tokens_spec: dict
    features_spec: dict


def documents_spec(normalization: str) -> dict:
    """The `documents` table (text_sha -> text) depends only on how texts are normalized."""
    return DOCUMENTS.spec({"normalization": normalization})


def plan_bert(store_root: str, config: BertConfig, normalization: str = "NFC") -> BertPlan:
    """Resolve the model and compute the fingerprints of what this run will read and write."""
    path = resolve_model(config.model)
    digests = model_digest(path)
    docs = documents_spec(normalization)
    store = FeatureStore(store_root)
    tokens = TOKENIZE.spec(config.tokenize, inputs={"documents": store.table("documents", docs).fingerprint},
                           digests={"tokenizer": digests["tokenizer"]})
    # EncodeConfig's speed-only fields (batch_tokens, threads) are not hashed: encode is
    # batch-invariant within 1e-5 (tests/pipeline check it). normalize="auto" is decided by
    # the model folder here, so the fingerprint (and the meta encode_query reads) says l2 or none.
    encode = replace(config.encode, normalize=resolve_normalize(config.encode.normalize, path))
    features = ENCODE.spec(encode, inputs={"bert_tokens": store.table("bert_tokens", tokens).fingerprint},
                           digests={"weights": digests["weights"], "config": digests["config"]})
    return BertPlan(store_root, path, config.tokenize, encode, docs, tokens, features)


def tables(plan: BertPlan):
    store = FeatureStore(plan.store)
    meta = {"model": plan.model_path, "tokenize": asdict(plan.tokenize), "encode": asdict(plan.encode)}
    return (store,
            store.table("documents", plan.documents_spec),
            store.table("bert_tokens", plan.tokens_spec, meta=meta),
            store.table("bert_features", plan.features_spec, meta=meta))


@functools.lru_cache(maxsize=4)
def cached_tokenizer(path: str):
    return load_tokenizer(path)


@functools.lru_cache(maxsize=2)
def cached_model(path: str, quantize: str):
    """One model per process (per worker), whatever the number of tasks."""
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()   # our own progress bars report shards, not weight tensors
    return load_model(path, quantize=quantize)


def cached_encoder(plan_store: str | None, path: str, encode: EncodeConfig, weights_digest: str | None):
    """What runs encode's forward pass: the torch model, or its ONNX export (EncodeConfig.backend).

    The export is a derived artifact kept in the store (derived/onnx/<weights+config digest>.onnx),
    made on first use and checked before every load; without a store, or one not on local disk,
    it is kept in the temporary directory instead.
    """
    if resolve_backend(encode.backend, encode.quantize) == "torch":
        return cached_model(path, encode.quantize)
    if weights_digest is None:
        weights_digest = _model_digest_json(path)
    return _cached_onnx(plan_store, path, hashlib.sha256(weights_digest.encode()).hexdigest()[:32],
                        encode.threads, encode.quantize)


@functools.lru_cache(maxsize=4)
def _model_digest_json(path: str) -> str:
    """The weights + config digests (as a bert_features spec holds them), once per process."""
    digests = model_digest(path)
    return json.dumps({"weights": digests["weights"], "config": digests["config"]}, sort_keys=True)


@functools.lru_cache(maxsize=2)
def _cached_onnx(plan_store: str | None, path: str, key: str, threads: int | None, quantize: str):
    store = FeatureStore(plan_store) if plan_store else None
    cache = f"{store.root}/derived/onnx" if store is not None and store.fs.local \
        else f"{tempfile.gettempdir()}/embcache-onnx"
    return onnx_model(lambda: cached_model(path, "none"), key, cache, threads, quantize)


def _load_libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


def release_native_memory() -> None:
    """Return freed heap pages to the OS after a shard (glibc only; a no-op elsewhere).

    Activations of varying shapes fragment glibc's heap: without this, peak RSS grew
    ~25 MB per 512-document shard on BBC (905 MB after 8 small shards); with it, it
    stays flat (~585 MB). Python-level memory was constant either way (tracemalloc).
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def tokenize_shard(plan: BertPlan, keys: list[str]) -> int:
    """Tokenize the documents with these text hashes; commit one bert_tokens shard. Returns rows."""
    _, documents, tokens, _ = tables(plan)
    docs = documents.lookup(keys, ["text"])
    out = tokenize(docs["text"].to_pylist(), cached_tokenizer(plan.model_path), plan.tokenize)
    shard = tokens.write(out.add_column(0, "text_sha", pa.array(keys, pa.string())))
    return shard.rows if shard else 0


def encode_shard(plan: BertPlan, keys: list[str]) -> int:
    """Encode the token ids of these text hashes; commit one bert_features shard. Returns rows."""
    _, _, tokens, features = tables(plan)
    windows = plan.tokenize.long_documents == "windows"
    ids = tokens.lookup(keys, ["input_ids", "more_windows"] if windows else ["input_ids"])  # encode_tokens' table
    model = cached_encoder(plan.store, plan.model_path, plan.encode, _digests(plan.features_spec))
    vectors = encode_tokens(ids, model, plan.encode)                                           # (N, H)
    shard = features.write(pa.table({
        "text_sha": pa.array(keys, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
    }))
    del vectors, ids
    release_native_memory()
    return shard.rows if shard else 0


def encode_query(plan_meta: dict, texts: list[str]) -> np.ndarray:
    """Encode query texts exactly as a bert_features table was built (from its spec.json meta)."""
    tok = TokenizeConfig(**plan_meta["tokenize"])
    # a table written before EncodeConfig had `normalize` was not normalised
    enc = EncodeConfig(**{"normalize": "none", **plan_meta["encode"]})
    enc = replace(enc, normalize=resolve_normalize(enc.normalize, plan_meta["model"]))
    ids = tokenize(texts, cached_tokenizer(plan_meta["model"]), tok)          # windows too, as the table was built
    if enc.quantize != "int8-channel":             # queries are a few texts: torch, without an export
        enc = replace(enc, backend="torch")
    return encode_tokens(ids, cached_encoder(None, plan_meta["model"], enc, None), enc).astype(np.float32)


def _digests(features_spec: dict) -> str | None:
    """The weights + config digests a bert_features spec records: the ONNX export's cache key."""
    digests = features_spec.get("digests")
    return json.dumps(digests, sort_keys=True) if digests else None


def truncation(store: str | FeatureStore, corpus: str, tokens_fp: str | None = None) -> dict:
    """How many of the corpus's distinct texts tokenization cut, and where.

    Reads only the `truncated` column of bert_tokens (`tokens_fp`, by default the table last
    linked to the corpus) for the current snapshot's texts:

    >>> truncation("./embcache-store", "bbc")                        # doctest: +SKIP
    {'texts': 2126, 'truncated': 1863, 'max_length': 256, 'model_limit': 512}

    model_limit: the most tokens the model takes (None when its files do not say). Under
    long_documents="windows" it also reads `windows`: `split` texts had more than one window,
    `windows` is the total (truncated then counts texts cut after max_windows windows).
    """
    fs = store if isinstance(store, FeatureStore) else FeatureStore(store)
    tokens = fs.open("bert_tokens", tokens_fp or fs.resolve_linked(corpus, "bert_tokens"))
    keys = pc.unique(fs.corpus(corpus).read(columns=["text_sha"])["text_sha"])
    meta = tokens.saved_spec()["meta"]
    windows = meta["tokenize"].get("long_documents") == "windows"
    rows = tokens.lookup(keys, ["truncated", "windows"] if windows else ["truncated"], missing="skip")
    cut = rows["truncated"]
    split = {"split": int(pc.sum(pc.greater(rows["windows"], 1)).as_py() or 0),
             "windows": int(pc.sum(rows["windows"]).as_py() or 0)} if windows else {}
    return {"texts": len(cut), "truncated": int(pc.sum(cut).as_py() or 0), **split,
            "max_length": int(meta["tokenize"]["max_length"]), "model_limit": max_positions(meta["model"])}


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

from ..pipeline.backends import onnx_model, resolve_backend, time_backends
from ..pipeline.devices import resolve_device
from ..pipeline.encode import EncodeConfig, encode_tokens
from ..pipeline.model import (load_model, load_tokenizer, max_positions, model_digest, resolve_model,
                              resolve_normalize)
from ..pipeline.errors import PipelineError
from ..pipeline.tokenize import TokenizeConfig, tokenize
from ..storage import FeatureStore
from . import backend_choice
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
class Counts:
    """What one featurize step did with the distinct texts a corpus needs."""
    computed: int                         # computed and committed by this run
    cached: int                           # the store had them already (under any id, in any corpus)
    dropped: int = 0                      # computed here too, but another run committed them first


@dataclass(frozen=True)
class BertFeaturized:
    """What featurize-bert did for a corpus (flows.featurize_flows.featurize_bert_flow's result)."""
    documents: int                        # in the corpus's current snapshot
    texts: int                            # the distinct texts among them
    tokenize: Counts                      # bert_tokens rows
    encode: Counts                        # bert_features rows
    tokens_fingerprint: str
    features_fingerprint: str
    model: str                            # the resolved model path or hub id
    truncated: int                        # texts cut at max_length (after max_windows windows under "windows")
    max_length: int
    model_limit: int | None               # the most tokens the model takes (None when its files do not say)
    split: int | None = None              # long_documents="windows": texts of more than one window,
    windows: int | None = None            #   and how many windows the corpus's texts make in all
    encoder: dict = field(default_factory=dict)   # device, precision, backend (auto: as measured)


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
def cached_model(path: str, quantize: str, device: str = "cpu", precision: str = "fp32"):
    """One model per process (per worker) and device/precision, whatever the number of tasks."""
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()   # our own progress bars report shards, not weight tensors
    return load_model(path, quantize=quantize, device=device, precision=precision)


def cached_encoder(plan_store: str | None, path: str, encode: EncodeConfig, weights_digest: str | None,
                   sample=None):
    """What runs encode's forward pass here: the torch model on EncodeConfig.device, or its ONNX export.

    The device is resolved in this process (a Dask worker sees its own GPU). backend="auto" on
    a CPU at fp32 with onnxruntime installed is decided by timing both on `sample` (token ids:
    the shard about to be encoded; backend_choice keeps the answer in the store per machine,
    model and threads; with no sample and no answer on record, torch). The export is a derived
    artifact kept in the store (derived/onnx/<weights+config digest>-fused-v1.onnx; int8-channel:
    <digest>.onnx quantized), made on first use and checked before every load; without a
    store, or one not on local disk, it is kept in the temporary directory.
    """
    device = encode_device(encode)
    backend = resolve_backend(encode.backend, encode.quantize, device.type, encode.precision)
    if weights_digest is None and backend != "torch":
        weights_digest = _model_digest_json(path)
    if backend == "measure":                   # nothing to time on and nothing on record: torch
        backend = (chosen_backend(plan_store, path, encode, weights_digest, sample) or {"backend": "torch"})["backend"]
    return _encoder(plan_store, path, backend, encode.quantize, str(device), encode.precision, encode.threads,
                    weights_digest)


def encode_device(encode: EncodeConfig):
    """EncodeConfig.device resolved in this process; "auto" is the CPU for the quantized models
    (int8, int8-channel: CPU kernels), else CUDA when torch sees a GPU."""
    if encode.device == "auto" and encode.quantize != "none":
        return resolve_device("cpu")
    return resolve_device(encode.device)


@functools.lru_cache(maxsize=4)
def _encoder(plan_store, path, backend, quantize, device, precision, threads, weights_digest):
    """One encoder per process and settings (each encode shard calls this once)."""
    if backend == "torch":
        return cached_model(path, quantize, device, precision)
    return _cached_onnx(plan_store, path, hashlib.sha256(weights_digest.encode()).hexdigest()[:32],
                        threads, quantize)


def chosen_backend(plan_store: str | None, path: str, encode: EncodeConfig, weights_digest: str | None,
                   sample=None) -> dict | None:
    """backend_choice's record for this machine, model and threads: measured on `sample` once;
    None when there is no record and no sample (token ids) to measure on."""
    weights_digest = weights_digest or _model_digest_json(path)
    fp32 = replace(encode, backend="torch")

    def measure() -> dict:
        key = hashlib.sha256(weights_digest.encode()).hexdigest()[:32]
        models = {"torch": cached_model(path, "none", "cpu", "fp32"),
                  "onnx": _cached_onnx(plan_store, path, key, encode.threads, "none")}
        return time_backends(models, sample, fp32)
    return backend_choice.choose(plan_store, weights_digest, encode.threads,
                                 measure if sample is not None and len(sample) else None)


def encoder_summary(plan: "BertPlan") -> dict:
    """What encoded (or would encode) this plan in this process: device, precision, backend; for
    backend="auto" on a CPU, the choices the store holds for this model (backend_choice)."""
    from ..pipeline.devices import describe
    try:
        device = encode_device(plan.encode)
    except PipelineError:                      # no such device here: the Dask workers have it
        return {"device": plan.encode.device, "precision": plan.encode.precision,
                "quantize": plan.encode.quantize, "backend": plan.encode.backend}
    backend = resolve_backend(plan.encode.backend, plan.encode.quantize, device.type, plan.encode.precision)
    summary = {"device": describe(device), "precision": plan.encode.precision, "quantize": plan.encode.quantize,
               "backend": plan.encode.backend if backend == "measure" else backend}
    if backend == "measure":
        model = _digests(plan.features_spec) or _model_digest_json(plan.model_path)
        mine = backend_choice.choice_key(model, plan.encode.threads)
        choices = backend_choice.recorded(plan.store, model)
        summary["choices"] = [{"backend": c["backend"], "here": c["key"] == mine, "threads": c["threads"],
                               "host": c["machine"]["host"], "seconds": c["measured"]["seconds"],
                               "line": backend_choice.describe(c)} for c in choices]
        here = next((c for c in summary["choices"] if c["here"]), None)
        if here is not None:
            summary["backend"] = here["backend"]
    return summary


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
    return onnx_model(lambda: cached_model(path, "none", "cpu", "fp32"), key, cache, threads, quantize)


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
    model = cached_encoder(plan.store, plan.model_path, plan.encode, _digests(plan.features_spec),
                           sample=ids.column("input_ids"))
    vectors = encode_tokens(ids, model, plan.encode)                                           # (N, H)
    shard = features.write(pa.table({
        "text_sha": pa.array(keys, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
    }))
    del vectors, ids
    release_native_memory()
    return shard.rows if shard else 0


def encode_query(plan_meta: dict, texts: list[str], device: str = "auto") -> np.ndarray:
    """Encode query texts exactly as a bert_features table was built (from its spec.json meta),
    on `device` (auto|cpu|cuda|cuda:N|mps: speed only), in the table's precision."""
    tok = TokenizeConfig(**plan_meta["tokenize"])
    # a table written before EncodeConfig had `normalize` was not normalised
    enc = EncodeConfig(**{"normalize": "none", **plan_meta["encode"], "device": device})
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


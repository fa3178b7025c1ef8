"""`embcache serve`: the store over HTTP, warm — features by id, similar documents, neighbours, SQL.

    uvicorn.run(create_app("./embcache-store", ServeConfig()), host="127.0.0.1", port=8765)

    GET  /features/bert_features?ids=business/001.txt&corpus=bbc    {"ids", "keys", "vectors"}
    GET  /features/bert_features?ids=3f2a…&format=arrow             Arrow IPC stream: key, vector
    POST /similar     {"corpus": "bbc", "text": "interest rates rise", "k": 5}   (or "vector": [...])
    GET  /neighbours?word=market&k=10
    POST /sql         {"query": "SELECT label, count(*) AS n FROM corpora.bbc GROUP BY 1"}
    GET  /tables, /health; OpenAPI docs at /docs

Everything goes through the same warm path as the Python API (embcache.search): each
table's memory-mapped matrix and HNSW index, each corpus snapshot and each encoder are
loaded once per process; every request re-checks (by stat) the few small files that a
commit replaces, so new commits are served without a restart. SQL runs in worker
threads, at most `sql_concurrency` at once, each within its time, memory and row limits.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Literal

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from . import search
from .errors import NotFound, QueryRefused, StoreError
from .serve_config import ServeConfig
from .storage import FeatureStore
from .storage.sql import QueryLimits, sql

ARROW_STREAM = "application/vnd.apache.arrow.stream"

try:                                    # Prefect and FastAPI bring it; ~5x faster on vectors than json
    import orjson

    def _dumps(obj) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:                     # pragma: no cover
    import json

    def _dumps(obj) -> bytes:
        return json.dumps(obj, default=lambda v: v.tolist()).encode()


class FastJSON(JSONResponse):
    def render(self, content) -> bytes:
        return _dumps(content)


class SimilarRequest(BaseModel):
    corpus: str = Field(description="Corpus whose current documents to search.")
    text: str | None = Field(None, description="Query text, encoded with the table's own model.")
    vector: list[float] | None = Field(None, description="Or a query vector (H values).")
    k: int = Field(5, ge=1, description="How many documents.")
    exact: bool = Field(False, description="Scan every vector instead of using the HNSW index.")
    fingerprint: str | None = Field(None, description="bert_features fingerprint (default: the corpus's).")


class SqlRequest(BaseModel):
    query: str = Field(description="One read-only SELECT over the store's views.")
    format: Literal["json", "arrow"] = "json"


def arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


_ENCODERS: dict[tuple[str, str], dict] = {}


def _encoder(store: FeatureStore, fingerprint: str):
    """Encode texts exactly as bert_features@fingerprint was built (spec read, model loaded once)."""
    from .stages.bert import encode_query          # torch and transformers: only when text is given
    key = (store.root, fingerprint)
    if key not in _ENCODERS:
        _ENCODERS[key] = store.open("bert_features", fingerprint).saved_spec()["meta"]
    meta = _ENCODERS[key]
    return lambda texts: encode_query(meta, texts)


def create_app(root: str, config: ServeConfig = ServeConfig()) -> FastAPI:
    """The FastAPI app over the store at `root` (which must exist)."""
    store = FeatureStore(root).require()
    search.set_recheck(config.recheck_s)
    limits = QueryLimits(timeout_s=config.sql_timeout_s, memory_limit=config.sql_memory_limit,
                         max_rows=config.sql_max_rows, threads=1)
    sql_slots = threading.BoundedSemaphore(config.sql_concurrency)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # One BLAS thread per request: requests already run side by side, and on busy cores
        # OpenBLAS's spinning threads made a 5,000-row scan 40x slower (benchmarks/query.py).
        from threadpoolctl import threadpool_limits          # scikit-learn's dependency
        threadpool_limits(1)
        if config.warm and "bert_features" in store.table_names():
            await run_in_threadpool(warm)
        yield

    def warm() -> None:
        fp = search.current_fingerprint(store, "bert_features")
        search.matrix(store, "bert_features", fp)
        try:
            _encoder(store, fp)(["warm up"])
        except (StoreError, OSError, KeyError, ImportError):
            pass                             # a table without a usable model still serves vectors

    app = FastAPI(title="embcache", version=_version(), lifespan=lifespan,
                  description="Cached text embeddings: features by id, similar documents, word neighbours, "
                              "read-only SQL. Every table's vectors are memory-mapped once; new commits show "
                              "up without a restart.")

    @app.exception_handler(StoreError)
    async def store_error(request: Request, e: StoreError):
        status = 404 if isinstance(e, NotFound) else 400 if isinstance(e, QueryRefused) else 500
        return FastJSON({"error": type(e).__name__, "detail": str(e)}, status_code=status)

    @app.exception_handler(ValueError)
    async def value_error(request: Request, e: ValueError):
        return FastJSON({"error": "ValueError", "detail": str(e)}, status_code=422)

    @app.get("/health", summary="Liveness and the store served")
    async def health():
        return {"status": "ok", "store": store.root}

    @app.get("/tables", summary="Every committed table under every fingerprint")
    def tables():
        return [vars(t) for t in store.tables()]

    @app.get("/features/{table}", summary="Vectors by id (text_sha, or doc_id with corpus=)",
             responses={200: {"content": {ARROW_STREAM: {}}}})
    async def features(table: str, ids: list[str] = Query(..., description="Ids (repeat, or comma-separate)."),
                       corpus: str | None = Query(None, description="Ids are doc_ids of this corpus."),
                       fingerprint: str | None = None, column: str = "vector",
                       format: Literal["json", "arrow"] = "json"):
        wanted = [i for chunk in ids for i in chunk.split(",") if i]
        if len(wanted) > config.max_ids:
            raise HTTPException(422, f"at most {config.max_ids} ids per request, got {len(wanted)}")
        fp = search.fingerprint_for(store, table, corpus, fingerprint)
        keys = search.text_shas(store, corpus, wanted) if corpus else wanted
        m = search.matrix(store, table, fp, column)
        rows, found = m.find(keys)
        if not found.all():
            raise NotFound(table, f"not in {table}@{fp[:12]}: "
                                  f"{', '.join(k for k, ok in zip(wanted, found) if not ok)[:500]}")
        vectors = np.asarray(m.vectors[rows])                                         # (N, H)
        if format == "arrow":
            cols = {"id": pa.array(wanted), "key": pa.array(keys),
                    column: pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])}
            return Response(arrow_bytes(pa.table(cols)), media_type=ARROW_STREAM)
        return FastJSON({"table": table, "fingerprint": fp, "ids": wanted, "keys": keys, column: vectors})

    @app.post("/similar", summary="Nearest documents of a corpus to a text or a vector")
    def similar(req: SimilarRequest):
        if (req.text is None) == (req.vector is None):
            raise HTTPException(422, "give exactly one of text or vector")
        k = min(req.k, config.max_k)
        fp = search.fingerprint_for(store, "bert_features", req.corpus, req.fingerprint)
        query = _encoder(store, fp)([req.text])[0] if req.text is not None else np.asarray(req.vector, np.float32)
        hits = search.similar_documents(store, req.corpus, fp, query, k, exact=req.exact)
        return FastJSON({"fingerprint": fp, "hits": [vars(h) for h in hits]})

    @app.get("/neighbours", summary="Nearest words by cosine over trained word vectors")
    def neighbours(word: str, k: int = Query(10, ge=1), corpus: str | None = None, fingerprint: str | None = None):
        fp = search.fingerprint_for(store, "word_vectors", corpus, fingerprint)
        hits = search.neighbours(store, fp, word, min(k, config.max_k))
        return FastJSON([{"word": w, "score": s} for w, s in hits])

    @app.post("/sql", summary="One read-only SELECT, bounded in time, memory and rows",
              responses={200: {"content": {ARROW_STREAM: {}}}})
    def run_sql(req: SqlRequest):
        if not sql_slots.acquire(timeout=config.sql_timeout_s):
            raise HTTPException(503, f"{config.sql_concurrency} SQL statements are already running; retry")
        try:
            result = sql(store, req.query, limits)
        finally:
            sql_slots.release()
        if req.format == "arrow":
            return Response(arrow_bytes(result), media_type=ARROW_STREAM)
        return FastJSON({"columns": result.column_names, "rows": result.to_pylist()})

    return app


def _version() -> str:
    import embcache
    return embcache.__version__

"""The query server (`embcache serve`): one `embcache.Store` over HTTP, warm — features by id,
similar documents, word neighbours, read-only SQL. (Prefect's server is `embcache server`, flows/.)

    uvicorn.run(create_app("./embcache-store", QueryServerConfig()), host="127.0.0.1", port=8765)

    GET  /features/bert_features?ids=business/001.txt&corpus=bbc    {"ids", "keys", "vector"}
    GET  /features/bert_features?ids=3f2a…&format=arrow             Arrow IPC stream: id, key, vector
    POST /similar     {"corpus": "bbc", "text": "interest rates rise", "k": 5}     -> {"hits": [...]}
                      {"corpus": "bbc", "texts": ["…", "…"], "where": "split = 'test'"}  -> {"results": [[...], ...]}
    GET  /neighbours?word=market&k=10                                (/neighbors: the same)
    POST /sql         {"query": "SELECT label, count(*) AS n FROM corpora.bbc GROUP BY 1"}
    GET  /tables, /health; OpenAPI docs at /docs (served from the package: no CDN)

Every request reads through the app's one Store (embcache/store.py), so answers are the
Python API's and the CLI's, and a damaged file behaves as it does there. Every error,
4xx or 5xx, validation errors included, is one JSON body {"error": NAME, "detail": TEXT}:
400 a refused SQL statement or name, 404 an unknown table, corpus, snapshot, column, id
or word, 413 past a per-request bound (QueryServerConfig), 422 an invalid request (a NaN
vector, a wrong width, a text that is not Unicode), 500 a damaged committed file (named)
or a bug; the server keeps serving after each.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Literal

import pyarrow as pa
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from .errors import InvalidName, NotFound, PipelineError, QueryRefused, StoreError
from .query_server_config import QueryServerConfig
from .storage import FeatureStore
from .store import Store

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


class TooLarge(Exception):
    """A request past one of QueryServerConfig's bounds (HTTP 413)."""


class SimilarRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: str = Field(description="Corpus whose documents to search.")
    text: str | None = Field(None, description="One query text, encoded with the table's own model.")
    texts: list[str] | None = Field(None, description="A batch of query texts: one hit list each, in order.")
    vector: list[float] | None = Field(None, description="One query vector (H values).")
    vectors: list[list[float]] | None = Field(None, description="A batch of query vectors.")
    k: int = Field(5, ge=1, description="Hits per query (at most the server's max_k).")
    exact: bool = Field(False, description="Scan every vector instead of using the vector index.")
    where: str | None = Field(None, description="SQL predicate over the corpus's columns, e.g. split = 'test' "
                                                "(searched exactly, over the matching documents).")
    label: list[str] | str | None = Field(None, description="Only documents with this label (or these).")
    snapshot: str | None = Field(None, description="A kept snapshot id (default: the current one).")
    fingerprint: str | None = Field(None, description="bert_features fingerprint (default: the corpus's).")


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(description="One read-only SELECT over the store's views.")
    format: Literal["json", "arrow"] = "json"


def arrow_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def status_of(e: Exception) -> int:
    """The HTTP status of an error raised while answering (see the module docstring)."""
    from .storage.sql import ResultTooLarge
    if isinstance(e, (TooLarge, ResultTooLarge)):
        return 413
    if isinstance(e, NotFound):
        return 404
    if isinstance(e, (InvalidName, QueryRefused)):
        return 400
    if isinstance(e, (ValueError, PipelineError)):
        return 422
    return 500


def error_body(name: str, detail: str, status: int) -> FastJSON:
    return FastJSON({"error": name, "detail": detail}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request body past `max_bytes` is answered 413 before it is read whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise TooLarge(f"the request body is over {self.max_bytes:,} bytes")
            return message

        try:
            await self.app(scope, counted, send)
        except TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = error_body("TooLarge", f"the request body is over {self.max_bytes:,} bytes "
                                          "(QueryServerConfig.max_body_bytes)", 413)
        await response(scope, receive, send)


def create_app(store: str | Store, config: QueryServerConfig = QueryServerConfig()) -> FastAPI:
    """The FastAPI app over a Store (or the store at a root, which must exist). Changes no global."""
    if not isinstance(store, Store):
        store = Store(FeatureStore(store).require(), recheck_s=config.recheck_s)
    from .storage.sql import QueryLimits
    limits = QueryLimits(timeout_s=config.sql_timeout_s, memory_limit=config.sql_memory_limit,
                         max_rows=config.sql_max_rows, threads=1)
    sql_slots = threading.BoundedSemaphore(config.sql_concurrency)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # One BLAS thread per request: requests already run side by side, and on busy cores
        # OpenBLAS's spinning threads made a 5,000-row scan 40x slower (benchmarks/query.py).
        from threadpoolctl import threadpool_limits          # scikit-learn's dependency
        threadpool_limits(1)
        if config.warm and "bert_features" in store.feature_store.table_names():
            await run_in_threadpool(warm)
        yield

    def warm() -> None:
        try:
            fp = store.reads.current_fingerprint("bert_features")
            store.reads.matrix("bert_features", fp)
            store.reads.encoder(fp)(["warm up"])
        except (StoreError, PipelineError, OSError, KeyError, ValueError, ImportError):
            pass                             # a table without a usable model still serves vectors

    app = _new_app(lifespan)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    async def known_error(request: Request, e: Exception):
        return error_body(type(e).__name__, str(e), status_of(e))

    for kind in (StoreError, PipelineError, ValueError, TooLarge):      # answered; nothing to log
        app.add_exception_handler(kind, known_error)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):                     # uvicorn logs the traceback too
        return error_body("InternalError", f"{type(e).__name__}: {e}", 500)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}"
                             for err in e.errors())
        return error_body("InvalidRequest", problems, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return error_body("HTTPError", str(e.detail), e.status_code)

    @app.get("/health", summary="Liveness and the store served")
    async def health():
        return {"status": "ok", "store": store.root}

    @app.get("/tables", summary="Every committed table under every fingerprint")
    def tables():
        return [vars(t) for t in store.tables()]

    @app.get("/features/{table}", summary="Vectors by id (a table's keys, or doc_ids with corpus=)",
             responses={200: {"content": {ARROW_STREAM: {}}}})
    async def features(table: str, ids: list[str] = Query(..., description="Ids (repeat, or comma-separate)."),
                       corpus: str | None = Query(None, description="Ids are doc_ids of this corpus."),
                       snapshot: str | None = Query(None, description="A kept snapshot of the corpus."),
                       fingerprint: str | None = None, column: str = "vector",
                       format: Literal["json", "arrow"] = "json"):
        wanted = [i for chunk in ids for i in chunk.split(",") if i]
        if len(wanted) > config.max_ids:
            raise TooLarge(f"at most {config.max_ids:,} ids per request, got {len(wanted):,}")
        fp = store.reads.fingerprint_for(table, corpus, fingerprint)
        keys = store.reads.text_shas(corpus, wanted, snapshot) if corpus else wanted
        vectors = store.reads.vectors(table, fp, keys, column)                       # (N, H)
        if format == "arrow":
            cols = {"id": pa.array(wanted, pa.string()), "key": pa.array(keys, pa.string()),
                    column: pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])}
            return Response(arrow_bytes(pa.table(cols)), media_type=ARROW_STREAM)
        return FastJSON({"table": table, "fingerprint": fp, "ids": wanted, "keys": keys, column: vectors})

    @app.post("/similar", summary="Nearest documents of a corpus to texts or vectors (one or a batch)")
    def similar(req: SimilarRequest):
        given = [name for name in ("text", "texts", "vector", "vectors") if getattr(req, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, texts, vector or vectors (got {', '.join(given) or 'none'})")
        batch = req.texts if req.texts is not None else req.vectors
        if batch is not None and len(batch) > config.max_batch:
            raise TooLarge(f"at most {config.max_batch} queries per request, got {len(batch)}")
        for t in req.texts or ([req.text] if req.text is not None else []):
            if len(t) > config.max_text_chars:
                raise TooLarge(f"a query text has {len(t):,} characters; at most {config.max_text_chars:,}")
        text = req.text if req.text is not None else req.texts
        vector = req.vector if req.vector is not None else req.vectors
        hits = store.similar(req.corpus, text, vector=vector, k=min(req.k, config.max_k), exact=req.exact,
                             fingerprint=req.fingerprint, where=req.where, label=req.label, snapshot=req.snapshot)
        fp = store.reads.fingerprint_for("bert_features", req.corpus, req.fingerprint)
        if batch is not None:
            return FastJSON({"fingerprint": fp, "results": [[vars(h) for h in one] for one in hits]})
        return FastJSON({"fingerprint": fp, "hits": [vars(h) for h in hits]})

    def neighbours(word: str, k: int = Query(10, ge=1), corpus: str | None = None, fingerprint: str | None = None):
        hits = store.neighbours(word, min(k, config.max_k), corpus=corpus, fingerprint=fingerprint)
        return FastJSON([{"word": w, "score": s} for w, s in hits])

    app.get("/neighbours", summary="Nearest words by cosine over trained word vectors")(neighbours)
    app.get("/neighbors", include_in_schema=False)(neighbours)                  # the American spelling

    @app.post("/sql", summary="One read-only SELECT, bounded in time, memory and rows",
              responses={200: {"content": {ARROW_STREAM: {}}}})
    def run_sql(req: SqlRequest):
        if not sql_slots.acquire(timeout=config.sql_timeout_s):
            raise HTTPException(503, f"{config.sql_concurrency} SQL statements are already running; retry")
        try:
            result = store.sql(req.query, limits)
        finally:
            sql_slots.release()
        if req.format == "arrow":
            return Response(arrow_bytes(result), media_type=ARROW_STREAM)
        return FastJSON({"columns": result.column_names, "rows": result.to_pylist()})

    return app


def _new_app(lifespan) -> FastAPI:
    """FastAPI with /docs served from the fastapi-offline package (no CDN: works offline); plain
    FastAPI's CDN-loaded /docs without it (`pip install 'embcache[serve]'`)."""
    kwargs = dict(title="embcache", version=_version(), lifespan=lifespan,
                  description="Cached text embeddings: features by id, similar documents, word neighbours, "
                              "read-only SQL. Every table's vectors are loaded once; new commits show up "
                              "without a restart. Errors: {\"error\", \"detail\"}.")
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        return FastAPI(**kwargs)
    return FastAPIOffline(**kwargs)


def _version() -> str:
    import embcache
    return embcache.__version__

"""Reading the store back: SQL over committed shards, vectors by key, cosine top-k, datasets.

SQL runs in an in-memory DuckDB whose only views are the store's committed shards:

    bert_features                  the table's current fingerprint
    "bert_features@3f2a1b9c0d1e"   a given fingerprint (first 12 hex digits)
    corpora.<name>                 a corpus's current snapshot (doc_id, text_sha, …)
    embcache_tables                the catalog: name, fingerprint, current, rows, shards, bytes
    embcache_snapshots             every corpus's snapshots: corpus, snapshot, current, rows, created

The connection is sandboxed by DuckDB itself (external access off, only the store
root readable, configuration locked) and only a single SELECT statement is accepted,
so nothing can write, attach, install or read outside the store. Like every other read,
a query checks the shards it can reach against their manifests (size, sha256) first:
only the views whose names the statement's text contains are created, and only after
their shards pass (a name built at run time finds no view, never an unchecked one).
"""

from __future__ import annotations

import re
import tempfile
import uuid

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import QueryRefused, StoreError
from .store import FeatureStore

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# EXPLAIN ANALYZE runs the statement it wraps (a COPY would write): what follows the
# keyword (and an option list) must itself be one SELECT.
_EXPLAIN = re.compile(r"\s*explain\s+(?:analy[sz]e\s+)?(?P<rest>.*)\Z", re.IGNORECASE | re.DOTALL)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _files_literal(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def connect(store: FeatureStore, query: str | None = None) -> duckdb.DuckDBPyConnection:
    """A sandboxed DuckDB connection with a view per committed table and corpus.

    `query`: create only the views whose names occur in its text (any case): a superset
    of what it can read; None: all of them. The shards behind each view created are
    checked against the manifest first, so a damaged file raises CorruptShard instead
    of answering with wrong values.
    """
    text = None if query is None else query.lower()
    con = duckdb.connect(":memory:")
    fs = store.fs
    if not fs.local:
        con.register_filesystem(fs.fs)
    path = fs.path if fs.local else (lambda *p: fs.fs.unstrip_protocol(fs.path(*p)))
    catalog = []
    for info in store.tables():
        catalog.append((info.name, info.fingerprint, info.current, info.rows, info.shards, info.bytes))
        if info.shards == 0:
            continue
        names = [info.name + "@" + info.fingerprint[:12]] + ([info.name] if info.current else [])
        names = [n for n in names if text is None or n in text]
        if not names:
            continue
        t = store.open(info.name, info.fingerprint)
        shards = t.manifest().shards
        for s in shards:
            t.read_shard(s, [t.key])          # size + sha256 against the manifest, or CorruptShard
        files = [path("tables", info.name, info.fingerprint, "shards", s.file) for s in shards]
        select = f"SELECT * FROM read_parquet({_files_literal(files)})"
        for name in names:
            con.execute(f"CREATE VIEW {_quote(name)} AS {select}")
    con.execute("CREATE SCHEMA corpora")
    snapshots = []
    for name in store.corpora():
        corpus = store.corpus(name)
        m = corpus.manifest()
        snapshots += [(name, s.id, s is m.current, s.rows, s.created) for s in m.snapshots]
        snap = m.current
        if snap is not None and (text is None or name in text):
            corpus.read(columns=["doc_id"])  # checked like a shard
            f = path("corpora", name, "snapshots", snap.file)
            con.execute(f"CREATE VIEW corpora.{_quote(name)} AS SELECT * FROM read_parquet({_files_literal([f])})")
    con.execute("CREATE TABLE embcache_snapshots (corpus VARCHAR, snapshot VARCHAR, current BOOLEAN, "
                "rows BIGINT, created VARCHAR)")
    if snapshots:
        con.executemany("INSERT INTO embcache_snapshots VALUES (?, ?, ?, ?, ?)", snapshots)
    con.execute("CREATE TABLE embcache_tables (name VARCHAR, fingerprint VARCHAR, current BOOLEAN, "
                "rows BIGINT, shards INTEGER, bytes BIGINT)")
    if catalog:
        con.executemany("INSERT INTO embcache_tables VALUES (?, ?, ?, ?, ?, ?)", catalog)
    # DuckDB also allows its temp directory (default: ./.tmp under the working directory, which
    # would make that readable): use a fresh private one, which DuckDB removes when it closes.
    con.execute(f"SET temp_directory='{tempfile.gettempdir()}/embcache-duckdb-{uuid.uuid4().hex}'")
    con.execute(f"SET allowed_directories={_files_literal([fs.url.rstrip('/') + '/'])}")
    con.execute("SET enable_external_access=false")
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute("SET lock_configuration=true")
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN) statement, before it runs."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise QueryRefused("sql", f"cannot parse query: {e}") from e
    if len(statements) != 1:
        raise QueryRefused("sql", f"expected one SELECT statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in ALLOWED:
        raise QueryRefused("sql", f"{kind.name} statements are refused: the SQL surface is read-only "
                                  "(SELECT over the store's tables only)")
    if kind == duckdb.StatementType.EXPLAIN and not _explains_a_select(con, statements[0].query):
        raise QueryRefused("sql", "EXPLAIN is accepted only of a SELECT statement (EXPLAIN ANALYZE runs it)")


def _explains_a_select(con: duckdb.DuckDBPyConnection, statement: str) -> bool:
    m = _EXPLAIN.match(statement)
    if m is None:
        return False
    rest = m.group("rest")
    candidates = [rest] + ([rest.split(")", 1)[1]] if rest.startswith("(") and ")" in rest else [])
    for text in candidates:          # as written, then after an option list such as (FORMAT json)
        try:
            inner = con.extract_statements(text)
        except duckdb.Error:
            continue
        return len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT
    return False


def sql(store: FeatureStore, query: str) -> pa.Table:
    """Run one read-only SELECT over the store; returns an Arrow table.

    >>> sql(store, "SELECT count(*) AS n FROM bert_features")  # doctest: +SKIP
    """
    parser = duckdb.connect(":memory:")   # parses only: refuse before reading anything
    try:
        check_read_only(parser, query)
    finally:
        parser.close()
    con = connect(store, query)
    try:
        try:
            return con.sql(query).to_arrow_table()
        except duckdb.PermissionException as e:
            raise QueryRefused("sql", f"refused by the sandbox (only the store's tables are readable): {e}") from e
        except duckdb.Error as e:
            raise StoreError("sql", str(e).splitlines()[0]) from e
    finally:
        con.close()


def as_matrix(column: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A (fixed-size) list column of vectors as an (N, D) array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        width = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else 0
        return np.zeros((0, width), dtype=dtype)
    if arr.null_count:
        raise StoreError("vectors", f"{arr.null_count} null vectors")
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(arr), -1).astype(dtype, copy=False)


def lookup_vectors(store: FeatureStore, table: str, keys, column: str = "vector",
                   fingerprint: str | None = None, to: str = "numpy"):
    """Vectors for `keys` in the given order: (N, D) numpy array, or a torch tensor with to="torch"."""
    rows = store.open(table, fingerprint).lookup(keys, [column])
    mat = as_matrix(rows[column])
    if to == "torch":
        import torch  # optional: the store itself does not depend on torch
        return torch.from_numpy(mat if mat.flags.writeable else mat.copy())  # Arrow buffers are read-only
    return mat


def topk_cosine(store: FeatureStore, table: str, queries: np.ndarray, k: int = 5,
                column: str = "vector", fingerprint: str | None = None,
                restrict_to=None) -> tuple[list[list], np.ndarray]:
    """Cosine top-k of each query vector over a table's vectors, one shard in memory at a time.

    Returns (keys, scores): keys[i] lists the k best keys for queries[i], scores is (Q, k).
    `restrict_to`: only consider these keys (e.g. a corpus snapshot's text_sha values).
    """
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    t = store.open(table, fingerprint)
    best_scores = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_keys = np.empty((len(q), 0), dtype=object)
    allowed = None if restrict_to is None else pa.array(list(restrict_to)) if not isinstance(
        restrict_to, (pa.Array, pa.ChunkedArray)) else restrict_to
    for shard in t.iter_shards([t.key, column]):
        if allowed is not None:
            shard = shard.filter(pc.is_in(shard[t.key], value_set=allowed))
        if shard.num_rows == 0:
            continue
        m = as_matrix(shard[column])
        m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
        scores = q @ m.T                                               # (Q, rows)
        keys = np.asarray(shard[t.key].to_pylist(), dtype=object)
        take = min(k, scores.shape[1])
        idx = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, idx, 1)], axis=1)
        best_keys = np.concatenate([best_keys, keys[idx]], axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, order, 1)
        best_keys = np.take_along_axis(best_keys, order, 1)
    return best_keys.tolist(), best_scores


def to_dataset(store: FeatureStore, table: str, fingerprint: str | None = None, columns=None):
    """A Hugging Face `datasets.Dataset` over a table's committed rows."""
    import datasets
    return datasets.Dataset(store.open(table, fingerprint).read(columns))

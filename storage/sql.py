"""Read-only DuckDB SQL over the store: the checked views are the only way in.

    bert_features                  the table's current fingerprint
    "bert_features@3f2a1b9c0d1e"   a given fingerprint (first 12 hex digits)
    corpora.<name>                 a corpus's current snapshot (doc_id, text_sha, …)
    corpora."<name>@000003"        any snapshot it keeps (the ids embcache_snapshots lists)
    embcache_tables                the catalog: name, fingerprint, current, rows, shards, bytes, error
    embcache_snapshots             every corpus's snapshots: corpus, snapshot, current, rows, created, error

How it is kept honest:
- DuckDB never opens a file. Each view is a pyarrow dataset over the table's committed
  shards, registered by this module; external access is off and the configuration
  locked, so `read_parquet('<store>/tables/…')`, `FROM 'x.parquet'` or `read_csv` find
  nothing to read (orphan and damaged files included): table functions other than
  range/generate_series/unnest and query_table('<view name>') are refused before
  anything runs.
- Only what the statement reads is opened: its table names come from DuckDB's own parse
  tree (json_serialize_sql). The shards behind each view are checked against the
  manifest once per caller's memo (storage/verified.py, a Verified that embcache.Store
  keeps: sha256 and size the first time, a stat afterwards), so a warm statement costs a
  manifest read, not a re-hash of every shard.
- A table or corpus whose manifest or current.json cannot be read fails only the
  statements that read it; the catalogs list it with its error.
- Every statement is bounded: a timeout (interrupt), DuckDB's memory limit (spilling to
  a private, size-capped temp directory) and a row limit on the result.
- A statement DuckDB cannot bind or run (an unknown table or column, a type error) is the
  caller's: QueryRefused with DuckDB's whole message, its candidate names and caret kept.

select_rows() runs a predicate (`where="split = 'test'"`) over one Arrow table in the same
sandbox: what filtered nearest-neighbour search uses.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import uuid
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

import numpy as np

from .errors import QueryLimit, QueryRefused, StoreError
from .store import FeatureStore
from .table import Table, read_current
from .verified import Verified

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
TABLE_FUNCTIONS = {"range", "generate_series", "unnest"}      # generate rows; read no file
CATALOGS = ("embcache_tables", "embcache_snapshots")
# EXPLAIN ANALYZE runs the statement it wraps (a COPY would write): what follows the
# keyword (and an option list) must itself be one SELECT.
_EXPLAIN = re.compile(r"\s*explain\s+(?:analy[sz]e\s+)?(?P<rest>.*)\Z", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class QueryLimits:
    """Bounds on one SQL statement (the CLI and the API use the defaults; `embcache serve` tighter ones)."""
    timeout_s: float = 60.0            # interrupted after this long (QueryLimit)
    memory_limit: str = "2GB"          # DuckDB's buffer pool; beyond it operators spill to temp files
    temp_limit: str = "4GB"            # at most this much spilled to the private temp directory
    max_rows: int | None = 1_000_000   # a longer result is refused (QueryLimit: add a LIMIT)
    threads: int = 2                   # DuckDB worker threads


class ResultTooLarge(QueryLimit):
    """A result with more rows than QueryLimits.max_rows (the server answers 413)."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN of one), before it runs."""
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
    if kind == duckdb.StatementType.EXPLAIN and _explained(con, statements[0].query) is None:
        raise QueryRefused("sql", "EXPLAIN is accepted only of a SELECT statement (EXPLAIN ANALYZE runs it)")


def _explained(con: duckdb.DuckDBPyConnection, statement: str) -> str | None:
    """The SELECT an EXPLAIN statement wraps, or None."""
    m = _EXPLAIN.match(statement)
    if m is None:
        return None
    rest = m.group("rest")
    candidates = [rest] + ([rest.split(")", 1)[1]] if rest.startswith("(") and ")" in rest else [])
    for text in candidates:          # as written, then after an option list such as (FORMAT json)
        try:
            inner = con.extract_statements(text)
        except duckdb.Error:
            continue
        return text if len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT else None
    return None


def references(con: duckdb.DuckDBPyConnection, query: str) -> set[str] | None:
    """Lower-cased names the statement reads ('bert_features', 'corpora.bbc', …); None if DuckDB
    cannot serialize its parse tree. Refuses table functions that could read files."""
    select = _explained(con, query) if con.extract_statements(query)[0].type == duckdb.StatementType.EXPLAIN \
        else query
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [select]).fetchall()[0][0])
    if tree.get("error"):
        return None
    names: set[str] = set()
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if node.get("type") == "BASE_TABLE":
            schema, name = node.get("schema_name", "").lower(), node.get("table_name", "").lower()
            names.add(f"{schema}.{name}" if schema else name)
        elif node.get("type") == "TABLE_FUNCTION":
            fn = str((node.get("function") or {}).get("function_name", "")).lower()
            if fn == "query_table":          # views by name: those names are what it reads
                named = _string_constants(node.get("function"))
                if named:
                    names.update(n.lower() for n in named)
                    continue
            if fn not in TABLE_FUNCTIONS:
                raise QueryRefused("sql", f"refused by the sandbox: table function {fn}() is not allowed; "
                                          "the store's views (tables by name, corpora.<name>, embcache_tables) "
                                          "are the only way in")
        todo.extend(node.values())
    return names


def _string_constants(node) -> list[str]:
    """Every string literal under a parse-tree node (query_table's table names)."""
    found, todo = [], [node]
    while todo:
        n = todo.pop()
        if isinstance(n, list):
            todo.extend(n)
        elif isinstance(n, dict):
            literal = n.get("literal") if n.get("type") == "VALUE_CONSTANT" else None
            if isinstance(literal, dict) and literal.get("kind") == "STRING":
                found.append(literal.get("text", ""))
            todo.extend(n.values())
    return found


class Views:
    """Which views a statement needs: by its parse tree, else by name occurring in its text."""

    def __init__(self, query: str | None, names: set[str] | None):
        self.text = None if query is None else query.lower()
        self.names = names

    def wants_any(self, prefix: str) -> bool:
        """Some view whose name starts with `prefix` (e.g. a corpus's snapshots, corpora.bbc@…)."""
        prefix = prefix.lower()
        if self.text is None:
            return False                   # all views: snapshots only by name, not every one of them
        if self.names is not None:
            return any(n.startswith(prefix) for n in self.names)
        return prefix.rsplit(".", 1)[-1] in self.text

    def wants(self, view: str) -> bool:
        view = view.lower()
        if self.text is None:
            return True
        if self.names is not None:
            return view in self.names
        return view.rsplit(".", 1)[-1] in self.text


def _dataset(store: FeatureStore, paths: list[str], schema: pa.Schema | None):
    fs = store.fs
    filesystem = None
    if not fs.local:
        from pyarrow.fs import FSSpecHandler, PyFileSystem
        filesystem = PyFileSystem(FSSpecHandler(fs.fs))
    if not paths:
        return schema.empty_table() if schema is not None else pa.table({})
    return pads.dataset(paths, schema=schema, format="parquet", filesystem=filesystem)


def _register(con, view: str, data, schema: str | None = None) -> None:
    hidden = f"embcache_{uuid.uuid4().hex}"
    con.register(hidden, data)
    con.execute(f"CREATE VIEW {schema + '.' if schema else ''}{_quote(view)} AS SELECT * FROM {_quote(hidden)}")


def _add_tables(con, store: FeatureStore, views: Views, verified: Verified) -> list[tuple]:
    """A view per wanted table (its shards checked first); catalog rows for every table."""
    catalog, want_catalog = [], views.wants("embcache_tables")
    for name in store.table_names():
        try:
            current, current_error = read_current(store.fs, name), None
        except StoreError as e:
            current, current_error = None, e
            if views.wants(name):
                raise
        for fp in store.fingerprints(name):
            t = Table(store.fs, name, fp)
            names = [n for n in [f"{name}@{fp[:12]}"] + ([name] if fp == current else []) if views.wants(n)]
            if not names and not want_catalog:
                continue
            try:
                if not t.exists():
                    continue
                m = t.manifest()
            except StoreError as e:
                if names:
                    raise
                catalog.append((name, fp, fp == current, None, None, None, f"{e.path}: {e.reason}"))
                continue
            error = None if current_error is None else f"{current_error.path}: {current_error.reason}"
            catalog.append((name, fp, fp == current, m.rows, len(m.shards), m.bytes, error))
            if not names:
                continue
            for s in m.shards:
                verified.check(store.fs, t.shard_path(s), s.bytes, s.sha256)
            data = _dataset(store, [t.shard_path(s) for s in m.shards], m.arrow_schema())
            for view in names:
                _register(con, view, data)
    return catalog


def _add_corpora(con, store: FeatureStore, views: Views, verified: Verified) -> list[tuple]:
    con.execute("CREATE SCHEMA corpora")
    snapshots, want_catalog = [], views.wants("embcache_snapshots")
    for name in store.corpora():
        wanted = views.wants(f"corpora.{name}")
        if not wanted and not want_catalog and not views.wants_any(f"corpora.{name}@"):
            continue
        corpus = store.corpus(name)
        try:
            m = corpus.manifest()
        except StoreError as e:
            if wanted:
                raise
            snapshots.append((name, None, None, None, None, f"{e.path}: {e.reason}"))
            continue
        snapshots += [(name, s.id, s is m.current, s.rows, s.created, None) for s in m.snapshots]
        for snap in m.snapshots:
            views_of = ([name] if wanted and snap is m.current else []) + \
                ([f"{name}@{snap.id}"] if views.wants(f"corpora.{name}@{snap.id}") else [])
            if not views_of:
                continue
            path = corpus.snapshot_path(snap)
            verified.check(store.fs, path, snap.bytes, snap.sha256, "committed snapshot")
            for view in views_of:
                _register(con, view, _dataset(store, [path], None), schema="corpora")
    return snapshots


def connect(store: FeatureStore, query: str | None = None, limits: QueryLimits = QueryLimits(),
            verified: Verified | None = None) -> duckdb.DuckDBPyConnection:
    """A sandboxed DuckDB connection with the views `query` reads (all of them when None).

    verified: the caller's memo of files already checked (a fresh one, so every file is
    hashed, when None)."""
    con = duckdb.connect(":memory:")
    verified = verified if verified is not None else Verified()
    try:
        views = Views(query, None if query is None else references(con, query))
        catalog = _add_tables(con, store, views, verified)
        snapshots = _add_corpora(con, store, views, verified)
        con.execute("CREATE TABLE embcache_snapshots (corpus VARCHAR, snapshot VARCHAR, current BOOLEAN, "
                    "rows BIGINT, created VARCHAR, error VARCHAR)")
        if snapshots:
            con.executemany("INSERT INTO embcache_snapshots VALUES (?, ?, ?, ?, ?, ?)", snapshots)
        con.execute("CREATE TABLE embcache_tables (name VARCHAR, fingerprint VARCHAR, current BOOLEAN, "
                    "rows BIGINT, shards INTEGER, bytes BIGINT, error VARCHAR)")
        if catalog:
            con.executemany("INSERT INTO embcache_tables VALUES (?, ?, ?, ?, ?, ?, ?)", catalog)
        _lock_down(con, limits)
    except BaseException:
        con.close()
        raise
    return con


def _lock_down(con: duckdb.DuckDBPyConnection, limits: QueryLimits) -> None:
    # a fresh private temp directory (DuckDB's default, ./.tmp, would sit in the working
    # directory), removed when the connection closes
    con.execute(f"SET temp_directory='{tempfile.gettempdir()}/embcache-duckdb-{uuid.uuid4().hex}'")
    con.execute(f"SET memory_limit='{limits.memory_limit}'")
    con.execute(f"SET max_temp_directory_size='{limits.temp_limit}'")
    con.execute(f"SET threads={int(limits.threads)}")
    con.execute("SET python_enable_replacements=false")    # no scans of Python variables by name
    con.execute("SET enable_external_access=false")
    con.execute("SET autoinstall_known_extensions=false")
    con.execute("SET autoload_known_extensions=false")
    con.execute("SET lock_configuration=true")


def sql(store: FeatureStore, query: str, limits: QueryLimits = QueryLimits(),
        verified: Verified | None = None) -> pa.Table:
    """Run one read-only SELECT over the store, within `limits`; returns an Arrow table.

    >>> sql(store, "SELECT count(*) AS n FROM bert_features")  # doctest: +SKIP
    """
    parser = duckdb.connect(":memory:")   # parses only: refuse before reading anything
    try:
        check_read_only(parser, query)
    finally:
        parser.close()
    con = connect(store, query, limits, verified)
    try:
        return _run(con, query, limits)
    finally:
        con.close()


def _run(con: duckdb.DuckDBPyConnection, query: str, limits: QueryLimits, params=None) -> pa.Table:
    """The statement's result within `limits`, DuckDB's errors as the store's."""
    timer = threading.Timer(limits.timeout_s, con.interrupt)
    timer.start()
    try:
        reader = con.execute(query, params).to_arrow_reader(8192) if params else \
            con.sql(query).to_arrow_reader(8192)
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if limits.max_rows is not None and rows > limits.max_rows:
                raise ResultTooLarge("sql", f"the result has more than {limits.max_rows:,} rows: add a LIMIT")
        return pa.Table.from_batches(batches, reader.schema)
    except duckdb.InterruptException as e:
        raise QueryLimit("sql", f"stopped after {limits.timeout_s:g} s (the statement's time limit)") from e
    except duckdb.OutOfMemoryException as e:
        raise QueryLimit("sql", f"needs more than the {limits.memory_limit} memory limit: {_first_line(e)}") from e
    except duckdb.PermissionException as e:
        raise QueryRefused("sql", f"refused by the sandbox (only the store's views are readable): "
                                  f"{_first_line(e)}") from e
    except duckdb.IOException as e:             # reading a checked shard failed: the store's problem
        raise StoreError("sql", str(e).strip()) from e
    except duckdb.Error as e:                   # cannot bind or run it: the statement's problem
        raise QueryRefused("sql", f"cannot run the statement: {_whole_message(con, query, e)}") from e
    finally:
        timer.cancel()


def _whole_message(con: duckdb.DuckDBPyConnection, query: str, e: duckdb.Error) -> str:
    """DuckDB's message with its caret line: the relational API (con.sql) leaves out "LINE 1: … ^",
    execute() keeps it. A statement that failed to bind fails again at once, before running."""
    if isinstance(e, (duckdb.BinderException, duckdb.CatalogException)):
        try:
            con.execute(query)
        except duckdb.Error as again:
            return str(again).strip()
    return str(e).strip()


FILTER_VIEW = "corpus"        # what a select_rows predicate reads: the table it filters


def select_rows(rows: pa.Table, where: str, limits: QueryLimits = QueryLimits(max_rows=None)) -> np.ndarray:
    """(M,) int64: positions of the rows of `rows` for which the SQL predicate `where` holds.

    >>> select_rows(pa.table({"split": ["train", "test", "test"]}), "split = 'test'").tolist()
    [1, 2]

    The predicate sees `rows`' columns (and the table as `corpus`) in the same sandbox as
    sql(): one SELECT, no other table, no file, within `limits`. QueryRefused if it cannot run.
    """
    if not isinstance(where, str) or not where.strip():
        raise QueryRefused("where", "the filter is empty: give a SQL predicate such as split = 'test'")
    query = f"SELECT embcache_row FROM {FILTER_VIEW} WHERE ({where})"
    con = duckdb.connect(":memory:")
    try:
        check_read_only(con, query)
        names = references(con, query)
        if names is None or not names <= {FILTER_VIEW}:
            raise QueryRefused("where", f"a filter reads only the corpus's own columns, not "
                                        f"{', '.join(sorted((names or {'?'}) - {FILTER_VIEW}))}")
        numbered = rows.append_column("embcache_row", pa.array(np.arange(rows.num_rows, dtype=np.int64)))
        _register(con, FILTER_VIEW, numbered)
        _lock_down(con, limits)
        found = _run(con, query, limits)
    finally:
        con.close()
    positions = np.asarray(found["embcache_row"].to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.unique(positions[(positions >= 0) & (positions < rows.num_rows)])   # a UNION may add others


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0]

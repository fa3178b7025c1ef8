"""The `embcache` command line. Store and query commands never import Prefect (fast startup);
pipeline commands import their flows when they run.

    embcache status --json
    embcache query sql "SELECT count(*) FROM bert_features"
    embcache query features bert_features --corpus bbc --ids business/001.txt --format npy -o v.npy
    embcache verify
    embcache gc --dry-run
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from ..storage import FeatureStore, StoreError, default_root

# Prefect's server telemetry writes to its SQLite database while the temporary server is
# still migrating it ("database is locked" tracebacks on a fresh PREFECT_HOME), and this
# machine has no network for it anyway. The user's own setting wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(help="embcache: a cached feature store for text embeddings.", no_args_is_help=True,
                  rich_markup_mode="markdown", pretty_exceptions_enable=False)
query_app = typer.Typer(help="Query cached features: SQL, by id, nearest neighbours.", no_args_is_help=True)
app.add_typer(query_app, name="query")

out = Console()
err = Console(stderr=True)

EXIT_ERROR = 2          # a store or input error (message on stderr)
EXIT_VERIFY_FAILED = 1  # verify found bad files


class SqlFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class FeatureFormat(str, Enum):
    json = "json"
    npy = "npy"
    parquet = "parquet"


def store_of(ctx: typer.Context) -> FeatureStore:
    return FeatureStore(ctx.obj["store"])


def fail(e: Exception, code: int = EXIT_ERROR) -> typer.Exit:
    from rich.markup import escape
    err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)   # "[head]" is text
    return typer.Exit(code)


def runs_flows(*modules: str):
    """A command that runs Prefect flows, on the temporary server it starts as its first act.

    The server (flows.serve.TemporaryAPI: Prefect's own, in a subprocess) starts while
    `modules` (flows.<name>, the command's flows and what they import: torch,
    transformers, Prefect) are imported, instead of after them at the first flow call
    (~7 s). With PREFECT_API_URL set, the flows report to that server and nothing starts.
    """
    def decorate(command):
        @functools.wraps(command)                     # typer reads the options from its signature
        def run_on_temporary_api(*args, **kwargs):
            from ..flows.serve import ServeError, TemporaryAPI
            with TemporaryAPI() as api:
                for name in modules:
                    importlib.import_module(f"embcache.flows.{name}")
                try:
                    with api.ready():
                        return command(*args, **kwargs)
                except ServeError as e:
                    raise fail(e)
        return run_on_temporary_api
    return decorate


class Runner(str, Enum):
    threads = "threads"
    dask = "dask"


@app.callback()
def main(ctx: typer.Context,
         store: str = typer.Option(None, "--store", envvar="EMBCACHE_STORE", show_default=False,
                                   help="Store root: a directory or URL (s3://…). "
                                        "Default: $EMBCACHE_STORE or ./embcache-store."),
         runner: Runner = typer.Option(None, "--runner", envvar="EMBCACHE_RUNNER", show_default=False,
                                       help="Where featurize tasks run: threads (this process; default) or "
                                            "dask (--dask-address, else a LocalCluster, a process per core)."),
         dask_address: str = typer.Option(None, "--dask-address", envvar="EMBCACHE_DASK_ADDRESS",
                                          help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --runner dask)."),
         dask_workers: int = typer.Option(None, "--dask-workers", min=1,
                                          help="Worker processes of the LocalCluster (default: one per core).")) -> None:
    # store_given: a --store / $EMBCACHE_STORE choice, which overrides a run config's own store;
    # runner: a RunnerConfig when given here (it overrides a run config's [runner]), else None
    from ..flows.runners import RunnerConfig
    if runner is Runner.threads and (dask_address or dask_workers):
        raise typer.BadParameter("--dask-address and --dask-workers go with --runner dask", param_hint="--runner")
    if dask_address and dask_workers:
        raise typer.BadParameter("a cluster at --dask-address has its own workers", param_hint="--dask-workers")
    dask = runner is Runner.dask or dask_address or dask_workers
    chosen = RunnerConfig("dask", dask_address, dask_workers) if dask else \
        RunnerConfig() if runner is Runner.threads else None
    ctx.obj = {"store": store or default_root(), "store_given": store is not None, "runner": chosen}


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Tables (every fingerprint) and corpora in the store.

    Example: `embcache status --json | jq '.tables[] | select(.current)'`
    """
    try:
        s = store_of(ctx).status()
    except StoreError as e:
        raise fail(e)
    if as_json:
        print(json.dumps(s, indent=1))
        return
    out.print(f"store [bold]{s['store']}[/bold]")
    t = RichTable("table", "fingerprint", "current", "stage", "rows", "shards", "bytes")
    for r in s["tables"]:
        t.add_row(r["name"], r["fingerprint"][:12], "*" if r["current"] else "", r["stage"] or "",
                  f"{r['rows']:,}", str(r["shards"]), f"{r['bytes']:,}")
    out.print(t)
    c = RichTable("corpus", "snapshot", "documents", "created", "tables")
    for r in s["corpora"]:
        c.add_row(r["name"], str(r["current_snapshot"]), f"{r['documents']:,}", r["created"] or "",
                  ", ".join(sorted(r["tables"])))
    out.print(c)


@app.command()
def verify(ctx: typer.Context):
    """Recompute every shard's checksum and row count; name every bad file (exit 1 if any).

    Example: `embcache verify --store ./embcache-store`
    """
    from ..storage.maintenance import verify as run_verify
    try:
        report = run_verify(store_of(ctx))
    except StoreError as e:
        raise fail(e)
    for path, reason in report.bad:
        err.print(f"[red]BAD[/red] {path}: {reason}", highlight=False, soft_wrap=True)
    out.print(f"checked {report.checked} files: {len(report.bad)} bad")
    if report.bad:
        raise typer.Exit(EXIT_VERIFY_FAILED)


@app.command()
def gc(ctx: typer.Context,
       grace: float = typer.Option(3600.0, help="Leave files younger than this many seconds "
                                                "(a commit may be in flight)."),
       dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; remove nothing."),
       keep_unreferenced: bool = typer.Option(False, "--keep-unreferenced",
                                              help="Remove only orphan files, keep every table.")):
    """Remove orphan temp files and shards, and tables nothing references.

    A table is referenced when it is its name's current fingerprint, linked from a
    corpus, or an input of a referenced table.

    Example: `embcache gc --grace 0 --dry-run`
    """
    from ..storage.maintenance import gc as run_gc
    try:
        report = run_gc(store_of(ctx), grace_seconds=grace, dry_run=dry_run,
                        unreferenced_tables=not keep_unreferenced)
    except StoreError as e:
        raise fail(e)
    verb = "would remove" if dry_run else "removed"
    for p in report.removed:
        out.print(f"{verb} {p}", highlight=False)
    out.print(f"{verb} {len(report.removed)} paths, {report.freed_bytes:,} bytes"
              + (f"; kept {report.kept_young} younger than {grace:g} s" if report.kept_young else ""))


@query_app.command("sql")
def query_sql(ctx: typer.Context, statement: str = typer.Argument(..., help="One SELECT statement."),
              fmt: SqlFormat = typer.Option(SqlFormat.table, "--format", help="Output format."),
              limit: int = typer.Option(50, help="Rows shown in table format (all rows in json/csv).")):
    """Read-only DuckDB SQL over the store's committed shards.

    Views: each table by name (current fingerprint), "name@<fp12>" for any
    fingerprint, corpora.<name> (current snapshot), embcache_tables (catalog),
    embcache_snapshots (every corpus's snapshots; `rejected` rows name theirs).
    Statements that write, attach, install or read files outside the store are refused.

    Example: `embcache query sql "SELECT label, count(*) FROM corpora.bbc GROUP BY 1"`
    """
    from ..storage.query import sql
    try:
        result = sql(store_of(ctx), statement)
    except StoreError as e:
        raise fail(e)
    print_table(result, fmt, limit)


def print_table(result, fmt: SqlFormat, limit: int) -> None:
    if fmt is SqlFormat.json:
        print(json.dumps(result.to_pylist(), default=str))
    elif fmt is SqlFormat.csv:
        import pyarrow.csv as pacsv
        buf = io.BytesIO()
        pacsv.write_csv(flatten_lists(result), buf)
        sys.stdout.write(buf.getvalue().decode())
    else:
        t = RichTable(*result.column_names)
        for row in result.slice(0, limit).to_pylist():
            t.add_row(*(short(v) for v in row.values()))
        out.print(t)
        if result.num_rows > limit:
            out.print(f"… {result.num_rows - limit:,} more rows (use --limit or --format json)")


def short(v) -> str:
    if isinstance(v, list) and len(v) > 6:
        return "[" + ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v[:4]) + f", … ({len(v)})]"
    return str(v)


def flatten_lists(table):
    """CSV has no list type: write vectors as JSON arrays."""
    import pyarrow as pa
    cols = []
    for name in table.column_names:
        col = table[name]
        if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
            col = pa.array([json.dumps(v) for v in col.to_pylist()])
        cols.append(col)
    return pa.table(cols, names=table.column_names)


@query_app.command("features")
def query_features(ctx: typer.Context, table: str = typer.Argument(..., help="Table name, e.g. bert_features."),
                   ids: list[str] = typer.Option(..., "--ids", help="Ids to look up (repeat, or comma-separate)."),
                   corpus: str = typer.Option(None, help="Treat ids as doc_ids of this corpus's current snapshot "
                                                         "(default: ids are the table's keys, e.g. text_sha)."),
                   fingerprint: str = typer.Option(None, help="A fingerprint (8+ hex digits); default: current."),
                   column: str = typer.Option("vector", help="Vector column for --format npy."),
                   fmt: FeatureFormat = typer.Option(FeatureFormat.json, "--format"),
                   output: Path = typer.Option(None, "-o", "--output", help="File for npy/parquet (required).")):
    """Point lookup: feature rows for the given ids, in the order given.

    Example: `embcache query features bert_features --corpus bbc --ids tech/001.txt,tech/002.txt --format npy -o v.npy`
    """
    import numpy as np
    import pyarrow as pa
    from ..storage.query import as_matrix
    wanted = [i for chunk in ids for i in chunk.split(",") if i]
    try:
        s = store_of(ctx)
        t = s.open(table, fingerprint)
        if corpus:
            docs = s.corpus(corpus).read(columns=["doc_id", "text_sha"])
            index = dict(zip(docs["doc_id"].to_pylist(), docs["text_sha"].to_pylist()))
            unknown = [i for i in wanted if i not in index]
            if unknown:
                raise StoreError(corpus, f"doc_id(s) not in the current snapshot: {', '.join(unknown[:5])}")
            rows = t.lookup([index[i] for i in wanted])
            rows = rows.append_column("doc_id", pa.array(wanted))
        else:
            rows = t.lookup(wanted)
        if fmt is FeatureFormat.json:
            print(json.dumps(rows.to_pylist(), default=str))
            return
        if output is None:
            raise StoreError("--output", f"--format {fmt.value} writes a file: give -o PATH")
        if fmt is FeatureFormat.npy:
            if column not in rows.column_names:
                raise StoreError(table, f"no column {column!r} (columns: {', '.join(rows.column_names)})")
            np.save(output, as_matrix(rows[column]))
        else:
            import pyarrow.parquet as pq
            pq.write_table(rows, output)
        out.print(f"wrote {rows.num_rows} rows to {output}")
    except StoreError as e:
        raise fail(e)

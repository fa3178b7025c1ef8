"""Query commands: sql, features (by id), similar (documents), neighbours (words); `index`.

They read the store only, through `embcache.Store` (the read path the Python API and
`embcache serve` use too), and never import Prefect. Vectors come from each table's
matrix (built once per shard set and kept in the store); `similar` encodes its text
through the store's ONNX export without torch when it can (pipeline/query_encoder.py);
`neighbours` is a numpy cosine, and DuckDB loads only for `sql` and `--where`.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Literal

import typer
from rich.table import Table as RichTable

from ..storage.ann import AnnConfig
from .app import app, out, query_app, store_of
from .options import option

SqlFormat = Literal["table", "json", "csv"]
FeatureFormat = Literal["json", "npy", "parquet"]


@query_app.command("sql")
def query_sql(ctx: typer.Context, statement: str = typer.Argument(..., help="One SELECT statement."),
              fmt: SqlFormat = typer.Option("table", "--format", help="Output format."),
              limit: int = typer.Option(50, help="Rows shown in table format (all rows in json/csv).")):
    """Read-only DuckDB SQL over the store's committed shards.

    Views: each table by name (current fingerprint), `"NAME@FP12"` for any
    fingerprint, `corpora.NAME` (current snapshot), `corpora."NAME@000003"` (any kept
    snapshot), embcache_tables (catalog), embcache_snapshots (every corpus's snapshots;
    `rejected` rows name theirs). Statements that write, attach, install or read files
    outside the store are refused.

    Example: `embcache query sql "SELECT label, count(*) FROM corpora.bbc GROUP BY 1"`
    """
    print_table(open_store(ctx).sql(statement), fmt, limit)


def open_store(ctx: typer.Context):
    """The public read facade over --store (every query command reads through one)."""
    import embcache
    return embcache.Store(store_of(ctx))


def print_table(result, fmt: SqlFormat, limit: int) -> None:
    if fmt == "json":
        print(json.dumps(result.to_pylist(), default=str))
    elif fmt == "csv":
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
                   snapshot: str = typer.Option(None, help="With --corpus: a kept snapshot id (embcache_snapshots)."),
                   fingerprint: str = typer.Option(None, help="A fingerprint (8+ hex digits); default: the "
                                                              "corpus's, else the current one."),
                   column: str = typer.Option("vector", help="Vector column for --format npy."),
                   fmt: FeatureFormat = typer.Option("json", "--format"),
                   output: Path = typer.Option(None, "-o", "--output", help="File for npy/parquet (required).")):
    """Point lookup: feature rows for the given ids, in the order given.

    Example: `embcache query features bert_features --corpus bbc --ids tech/001.txt,tech/002.txt --format npy -o v.npy`
    """
    import numpy as np
    wanted = [i for chunk in ids for i in chunk.split(",") if i]
    store = open_store(ctx)
    if fmt != "json" and output is None:
        raise typer.BadParameter(f"--format {fmt} writes a file: give -o PATH", param_hint="--output")
    if fmt == "npy":
        vectors = store.lookup(wanted, corpus, table=table, column=column, fingerprint=fingerprint,
                               snapshot=snapshot)
        np.save(output, vectors)
        out.print(f"wrote {len(vectors)} rows to {output}")
        return
    rows = store.rows(table, wanted, corpus, fingerprint=fingerprint, snapshot=snapshot)
    if fmt == "json":
        print(json.dumps(rows.to_pylist(), default=str))
        return
    import pyarrow.parquet as pq
    pq.write_table(rows, output)
    out.print(f"wrote {rows.num_rows} rows to {output}")


@query_app.command("similar")
def query_similar(ctx: typer.Context,
                  corpus: str = typer.Argument(..., help="Corpus whose documents to search."),
                  texts: list[str] = typer.Argument(..., help="Query text; several for a batch (one result each)."),
                  k: int = typer.Option(5, "--k", min=1, help="How many documents per query."),
                  where: str = typer.Option(None, "--where", help="Only documents for which this SQL predicate over "
                                                                  "the corpus's columns holds, e.g. \"split = 'test'\" "
                                                                  "(searched exactly)."),
                  label: list[str] = typer.Option(None, "--label", help="Only documents with this label (repeat "
                                                                        "for several)."),
                  snapshot: str = typer.Option(None, help="Search a kept snapshot's documents (default: current)."),
                  fingerprint: str = typer.Option(None, help="bert_features fingerprint (default: the corpus's)."),
                  exact: bool = typer.Option(False, "--exact", help="Scan every vector, even where "
                                             "`embcache index bert_features` built a vector index."),
                  as_json: bool = typer.Option(False, "--json", help="JSON: a list of hits (one text), or one "
                                                                     "{query, hits} per text (several).")):
    """Nearest documents to TEXT by cosine over cached vectors (the query is encoded with the same model).

    Example: `embcache query similar bbc "interest rates rise" --k 5 --label business`
    """
    results = open_store(ctx).similar(corpus, list(texts), k=k, fingerprint=fingerprint, exact=exact,
                                      where=where, label=label or None, snapshot=snapshot)
    if as_json:
        shown = [[{"doc_id": h.doc_id, "label": h.label, "score": h.score, "text": h.text[:160]} for h in hits]
                 for hits in results]
        print(json.dumps(shown[0] if len(texts) == 1 else
                         [{"query": t, "hits": hits} for t, hits in zip(texts, shown)]))
        return
    for text, hits in zip(texts, results):
        if len(texts) > 1:
            out.print(f"== {text}", highlight=False, markup=False)
        for h in hits:
            out.print(f"{h.score:.4f}  {h.doc_id}  [{h.label or ''}]  {h.text[:100]!r}",
                      highlight=False, markup=False)


@query_app.command("neighbours")
def query_neighbours(ctx: typer.Context, word: str = typer.Argument(..., help="A word in the vocabulary."),
                     k: int = typer.Option(10, "--k", min=1, help="How many neighbours."),
                     fingerprint: str = typer.Option(None, help="word_vectors fingerprint (default: current)."),
                     as_json: bool = typer.Option(False, "--json")):
    """Nearest words by cosine over the trained word vectors (`query neighbors` is the same).

    Example: `embcache query neighbours market --k 10`
    """
    hits = open_store(ctx).neighbours(word, k, fingerprint=fingerprint)
    if as_json:
        print(json.dumps([{"word": w, "score": s} for w, s in hits]))
        return
    for w, s in hits:
        out.print(f"{s:.4f}  {w}", highlight=False, markup=False)


query_app.command("neighbors", hidden=True)(query_neighbours)        # the American spelling, as an alias


@app.command("index")
def index(ctx: typer.Context, table: str = typer.Argument(..., help="Table whose vectors to index, e.g. bert_features."),
          column: str = typer.Option("vector", help="Vector column."),
          fingerprint: str = typer.Option(None, help="A fingerprint (8+ hex digits); default: current."),
          rebuild: bool = typer.Option(False, "--rebuild", help="Build from scratch instead of extending."),
          nlist: int = option(AnnConfig, "nlist", "--nlist", min=0,
                              help="Clusters (0: 4·√rows, a power of 2): more = fewer rows scanned per cluster."),
          nprobe: int = option(AnnConfig, "nprobe", "--nprobe", min=0,
                               help="Clusters scanned per query (0: the fewest that reach --recall, measured)."),
          target_recall: float = option(AnnConfig, "target_recall", "--recall", min=0.01, max=1.0,
                                        help="recall@10 the measured nprobe must reach on stored rows."),
          min_rows: int = option(AnnConfig, "min_rows", "--min-rows", min=0,
                                 help="Smaller tables are still searched exactly.")):
    """Build (or extend) a table's vector index (IVF, 8-bit codes), for `query similar` and `embcache serve`.

    Needs faiss (`pip install 'embcache[ann]'`). Later runs add only the rows committed
    since, beside the rows indexed before (`--rebuild` starts over); until then new rows
    are searched exactly. Results are re-ranked by exact cosine from the table's matrix;
    `query similar --exact` skips the index. Every file of the index is checked (sha256):
    a damaged index is rebuilt.

    Example: `embcache index bert_features`
    """
    from ..storage.ann import build_index, require_faiss
    require_faiss()
    store = open_store(ctx)
    t = store.feature_store.open(table, fingerprint)
    config = AnnConfig(nlist=nlist, nprobe=nprobe, target_recall=target_recall, min_rows=min_rows)
    done = build_index(t, store.reads.matrix(table, t.fingerprint, column), config, rebuild=rebuild)
    if done.get("damaged"):
        out.print(f"{table}@{t.fingerprint[:12]}: the index was damaged ({done['damaged']})",
                  highlight=False, soft_wrap=True)
    what = {"extended": f", +{done['added']:,} in a new segment", "merged": f", +{done['added']:,}, segments merged",
            "reused": ", the same rows after compaction"}.get(done["action"], "")
    measured = f" (recall@10 {done['recall']:.3f} on stored rows)" if "recall" in done else ""
    out.print(f"{table}@{t.fingerprint[:12]}: index {done['action']} ({done['rows']:,} rows{what}; "
              f"nlist {done['nlist']:,}, nprobe {done['nprobe']}{measured}) in {done['seconds']:.1f} s",
              highlight=False, soft_wrap=True)
    if done["rows"] < min_rows:
        out.print(f"{done['rows']:,} rows < --min-rows {min_rows:,}: queries stay exact (fast enough at this size)",
                  highlight=False)

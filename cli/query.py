"""Query commands: sql, features (by id), similar (documents), neighbors (words).

They read the store only and never import Prefect; `similar` loads the encoder of the
features it searches, `neighbors` gensim's KeyedVectors.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Literal

import typer
from rich.table import Table as RichTable

from ..storage import StoreError
from .app import out, query_app, store_of

SqlFormat = Literal["table", "json", "csv"]
FeatureFormat = Literal["json", "npy", "parquet"]


@query_app.command("sql")
def query_sql(ctx: typer.Context, statement: str = typer.Argument(..., help="One SELECT statement."),
              fmt: SqlFormat = typer.Option("table", "--format", help="Output format."),
              limit: int = typer.Option(50, help="Rows shown in table format (all rows in json/csv).")):
    """Read-only DuckDB SQL over the store's committed shards.

    Views: each table by name (current fingerprint), "name@<fp12>" for any
    fingerprint, corpora.<name> (current snapshot), embcache_tables (catalog),
    embcache_snapshots (every corpus's snapshots; `rejected` rows name theirs).
    Statements that write, attach, install or read files outside the store are refused.

    Example: `embcache query sql "SELECT label, count(*) FROM corpora.bbc GROUP BY 1"`
    """
    from ..storage.query import sql
    print_table(sql(store_of(ctx), statement), fmt, limit)


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
                   fingerprint: str = typer.Option(None, help="A fingerprint (8+ hex digits); default: current."),
                   column: str = typer.Option("vector", help="Vector column for --format npy."),
                   fmt: FeatureFormat = typer.Option("json", "--format"),
                   output: Path = typer.Option(None, "-o", "--output", help="File for npy/parquet (required).")):
    """Point lookup: feature rows for the given ids, in the order given.

    Example: `embcache query features bert_features --corpus bbc --ids tech/001.txt,tech/002.txt --format npy -o v.npy`
    """
    import numpy as np
    import pyarrow as pa
    from ..storage.query import as_matrix
    wanted = [i for chunk in ids for i in chunk.split(",") if i]
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
    if fmt == "json":
        print(json.dumps(rows.to_pylist(), default=str))
        return
    if output is None:
        raise StoreError("--output", f"--format {fmt} writes a file: give -o PATH")
    if fmt == "npy":
        if column not in rows.column_names:
            raise StoreError(table, f"no column {column!r} (columns: {', '.join(rows.column_names)})")
        np.save(output, as_matrix(rows[column]))
    else:
        import pyarrow.parquet as pq
        pq.write_table(rows, output)
    out.print(f"wrote {rows.num_rows} rows to {output}")


@query_app.command("similar")
def query_similar(ctx: typer.Context,
                  corpus: str = typer.Argument(..., help="Corpus whose documents to search."),
                  text: str = typer.Argument(..., help="Query text."),
                  k: int = typer.Option(5, "--k", help="How many documents."),
                  fingerprint: str = typer.Option(None, help="bert_features fingerprint (default: current)."),
                  as_json: bool = typer.Option(False, "--json")):
    """Nearest documents to TEXT by cosine over cached vectors (the query is encoded with the same model).

    Example: `embcache query similar bbc "interest rates rise" --k 5`
    """
    import pyarrow.compute as pc
    from ..storage.query import topk_cosine
    from ..stages import bert
    store = store_of(ctx)
    features = store.open("bert_features", fingerprint)
    meta = features.saved_spec()["meta"]
    docs = store.corpus(corpus).read()
    query = bert.encode_query(meta, [text])
    keys, scores = topk_cosine(store, "bert_features", query, k=k, fingerprint=features.fingerprint,
                               restrict_to=pc.unique(docs["text_sha"]))
    texts = store.open("documents", store.resolve_linked(corpus, "documents")).lookup(keys[0], ["text"])
    by_sha = {}
    for row in docs.select(["doc_id", "text_sha"] + (["label"] if "label" in docs.column_names else [])).to_pylist():
        by_sha.setdefault(row["text_sha"], row)
    hits = [{"doc_id": by_sha[key]["doc_id"], "label": by_sha[key].get("label"), "score": float(s),
             "text": t[:160]} for key, s, t in zip(keys[0], scores[0], texts["text"].to_pylist())]
    if as_json:
        print(json.dumps(hits))
        return
    for h in hits:
        out.print(f"{h['score']:.4f}  {h['doc_id']}  [{h['label'] or ''}]  {h['text'][:100]!r}",
                  highlight=False, markup=False)


@query_app.command("neighbors")
def query_neighbors(ctx: typer.Context, word: str = typer.Argument(..., help="A word in the vocabulary."),
                    k: int = typer.Option(10, "--k", help="How many neighbours."),
                    fingerprint: str = typer.Option(None, help="word_vectors fingerprint (default: current)."),
                    as_json: bool = typer.Option(False, "--json")):
    """Nearest words by cosine over the trained word vectors.

    Example: `embcache query neighbors market --k 10`
    """
    from ..stages.word2vec_eval import keyed_vectors, neighbours
    kv = keyed_vectors(store_of(ctx), fingerprint)
    try:
        hits = neighbours(kv, word.lower(), k)
    except KeyError:
        raise StoreError("word_vectors", f"{word!r} is not in the vocabulary") from None
    if as_json:
        print(json.dumps([{"word": w, "score": s} for w, s in hits]))
        return
    for w, s in hits:
        out.print(f"{s:.4f}  {w}", highlight=False, markup=False)

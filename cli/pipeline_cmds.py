"""Pipeline commands of the CLI: ingest, featurize, query similar. Prefect is imported
only inside the commands that run flows."""

from __future__ import annotations

import json
from contextlib import contextmanager
from enum import Enum

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..flows.errors import FlowError
from ..pipeline.errors import PipelineError
from ..storage import StoreError

from .app import app, err, fail, out, query_app, runs_flows, store_of

featurize_app = typer.Typer(help="Precompute features into the store (only what is missing).",
                            no_args_is_help=True)
app.add_typer(featurize_app, name="featurize")

EXIT_REJECTED = 3   # ingest finished, but some rows were rejected (counts printed per reason)


class SourceFormat(str, Enum):
    auto = "auto"
    lines = "lines"
    files = "files"
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    folder = "folder"


class Pooling(str, Enum):
    mean = "mean"
    cls = "cls"
    pooler = "pooler"


class Quantize(str, Enum):
    none = "none"
    int8 = "int8"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"


@contextmanager
def progress_bars():
    """Rich bars fed by flows.progress while a flow runs in this process.

    Redrawn 4 times a second on a terminal. Elsewhere (a pipe, a log file) nothing is
    drawn until the end, so no refresh thread rebuilds them meanwhile (at rich's default
    10 per second it took 0.6 % of a core from encoding); their final state is printed once.
    """
    from ..flows import progress
    bars = Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False,
                    auto_refresh=err.is_terminal, refresh_per_second=4)
    ids: dict[str, int] = {}

    def report(stage: str, n: int, total: int) -> None:
        if stage not in ids:
            ids[stage] = bars.add_task(stage, total=total or None)
        bars.advance(ids[stage], n)

    progress.set_reporter(report)
    try:
        with bars:
            yield
    finally:
        progress.set_reporter(None)


@app.command()
@runs_flows("featurize_flows")
def ingest(ctx: typer.Context,
           corpus: str = typer.Argument(..., help="Corpus name (lowercase identifier)."),
           sources: list[str] = typer.Argument(..., help="Files, directories or globs."),
           fmt: SourceFormat = typer.Option(SourceFormat.auto, "--format", help="Source format."),
           text_column: str = typer.Option("text", help="Column / JSON field with the text."),
           label_column: str = typer.Option(None, help="Column with the label."),
           id_column: str = typer.Option(None, help="Column with a document id (default: path and row)."),
           split_column: str = typer.Option(None, help="Column with the split (train/test/…)."),
           labels: str = typer.Option(None, help="Declared label set, comma-separated; others are rejected."),
           max_bytes: int = typer.Option(1_000_000, help="Reject texts above this many UTF-8 bytes."),
           normalization: str = typer.Option("NFC", help="Unicode normalization: NFC, NFKC or none.")):
    """Read sources into a new snapshot of CORPUS; bad rows go to the `rejected` table.

    Exits 3 when rows were rejected (counts per reason are printed), 2 on errors.

    Example: `embcache ingest bbc ./bbc --format folder`  ·  `embcache ingest reviews 'data/*.csv' --label-column stars`
    """
    from ..pipeline.ingest import IngestConfig, Source
    config = IngestConfig(max_bytes=max_bytes, normalization=normalization,
                          labels=tuple(x.strip() for x in labels.split(",")) if labels else None)
    srcs = [Source(s, format=fmt.value, text_column=text_column, label_column=label_column,
                   id_column=id_column, split_column=split_column) for s in sources]
    from ..flows.featurize_flows import ingest_flow
    try:
        with progress_bars():
            r = ingest_flow(corpus, srcs, config, store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    out.print(f"corpus [bold]{corpus}[/bold] snapshot {r['snapshot']}: {r['documents']:,} documents "
              f"({r['new_texts']:,} new texts), {r['rejected_total']:,} rejected of {r['inputs']:,} rows")
    for reason, n in sorted(r["rejected"].items(), key=lambda kv: -kv[1]):
        out.print(f"  rejected {n:>8,}  {reason}")
    if r["rejected_total"]:
        out.print("  details: embcache query sql \"SELECT source, row, reason, detail FROM rejected "
                  f"WHERE corpus = '{corpus}'\"")
        raise typer.Exit(EXIT_REJECTED)


@featurize_app.command("bert")
@runs_flows("featurize_flows")
def featurize_bert(ctx: typer.Context,
                   corpus: str = typer.Argument(..., help="An ingested corpus."),
                   model: str = typer.Option(None, help="HF id or local path (default: the packaged MiniLM)."),
                   pooling: Pooling = typer.Option(Pooling.mean, help="mean (default), cls, or the model's "
                                                                      "pooler output (untrained in MiniLM)."),
                   max_length: int = typer.Option(256, help="Tokens per text; longer texts are truncated."),
                   batch_tokens: int = typer.Option(2048, help="Padded tokens per forward batch."),
                   quantize: Quantize = typer.Option(Quantize.none, help="int8: dynamic quantization of Linear layers."),
                   dtype: DType = typer.Option(DType.float32, help="Stored vector dtype."),
                   shard_docs: int = typer.Option(512, help="Documents per encode task.")):
    """Tokenize and encode CORPUS's documents into bert_tokens / bert_features (only what is missing).

    A changed model, pooling, max length, dtype or quantization makes a new table;
    nothing cached under another configuration is ever served.

    Example: `embcache featurize bert bbc --pooling cls --max-length 128`
    """
    from ..pipeline.encode import EncodeConfig
    from ..pipeline.tokenize import TokenizeConfig
    from ..flows import runners
    from ..flows.featurize_flows import featurize_bert_flow
    try:
        with progress_bars(), runners.session(ctx.obj["runner"]):
            r = runners.on(featurize_bert_flow)(corpus, model, TokenizeConfig(max_length=max_length),
                                    EncodeConfig(pooling=pooling.value, dtype=dtype.value,
                                                 batch_tokens=batch_tokens, quantize=quantize.value),
                                    store=store_of(ctx).root, encode_shard_docs=shard_docs)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    out.print(f"{r['texts']:,} texts: tokenized {r['tokenize_computed']:,} (cached {r['tokenize_cached']:,}), "
              f"encoded {r['encode_computed']:,} (cached {r['encode_cached']:,})")
    out.print(f"bert_features@{r['features_fingerprint'][:12]}  model {r['model']}")
    if quantize is Quantize.int8:
        report_quantization(ctx, corpus, r)


def report_quantization(ctx: typer.Context, corpus: str, r: dict) -> None:
    """Fidelity of int8 vs fp32 on a sample of the corpus, measured and printed."""
    import numpy as np
    from ..pipeline.encode import EncodeConfig, encode, quantization_fidelity
    from ..stages import bert
    store = store_of(ctx)
    sample = store.corpus(corpus).read(columns=["text_sha"])["text_sha"].to_pylist()[:128]
    meta = store.open("bert_features", r["features_fingerprint"]).saved_spec()["meta"]
    ids = store.open("bert_tokens", r["tokens_fingerprint"]).lookup(sorted(set(sample)), ["input_ids"])["input_ids"]
    enc = EncodeConfig(**meta["encode"])
    q = encode(ids, bert.cached_model(meta["model"], "int8"), enc)
    f = encode(ids, bert.cached_model(meta["model"], "none"), EncodeConfig(**{**meta["encode"], "quantize": "none"}))
    fid = quantization_fidelity(np.asarray(f, np.float32), np.asarray(q, np.float32))
    out.print(f"int8 fidelity vs fp32 on {len(ids)} texts: mean cosine {fid['mean_cosine']:.4f}, "
              f"min {fid['min_cosine']:.4f}")


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
    try:
        store = store_of(ctx)
        features = store.open("bert_features", fingerprint)
        meta = features.saved_spec()["meta"]
        docs = store.corpus(corpus).read()
        query = bert.encode_query(meta, [text])
        keys, scores = topk_cosine(store, "bert_features", query, k=k, fingerprint=features.fingerprint,
                                   restrict_to=pc.unique(docs["text_sha"]))
        texts = store.open("documents", store.resolve_linked(corpus, "documents")).lookup(keys[0], ["text"])
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
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
